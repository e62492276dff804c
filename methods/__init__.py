"""Built-in training methods: one file each, registered with `harness.method.register_method`."""
