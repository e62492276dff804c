"""The environment variable that marks the one process allowed to read `driver_digits`' files.

Its own module so that a test can name it without importing `tests.driver_only_dataset`, whose import
registers `driver_digits` in the importing process's dataset registry (and would leak it into every
test that lists the registry)."""

DRIVER_ENV = "HARNESS_TEST_DATA_ON_THIS_NODE"
