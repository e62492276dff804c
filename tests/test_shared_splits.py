"""Splits in Ray's object store (`harness.data.shared`): the same bytes as the files, mapped without a copy,
recorded in the audit, never a test split for tuning, never written into by a run.

The jobs run in this process against a local Ray runtime (the driver's own object store); the
two-node test in test_cluster.py shows worker nodes running a suite without the data files."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from harness import audit
from harness.data import clear_cache, load_split, sealed_test_split
from harness.data.shared import SharedSplits, split_digest
from harness.data.sources import training_window
from harness.errors import SealBrokenError, SealedSplitError
from harness.jobs import RunSpec, final_run, tuning_trial
from harness.suite import BenchmarkSpec, Budget, MethodEntry

pytestmark = pytest.mark.ray
DATASET = "digits28"  # 1.1 MB of train images: above Ray's inline limit, so it lives in shared memory


@pytest.fixture(scope="module")
def shared():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        yield SharedSplits()
    finally:
        if started:
            ray.shutdown()


def spec(protocol: str = "holdout", dataset: str = DATASET) -> RunSpec:
    bench = BenchmarkSpec(dataset=dataset, model="tiny_cnn", budget=Budget(epochs=1), augment=False)
    return RunSpec(benchmark=bench, method=MethodEntry(name="erm"), seed=0, protocol=protocol, metrics=("accuracy",))


def reads(outcome: dict) -> list[dict]:
    return json.loads(outcome["data_files_read"])["reads"]


def test_a_shared_split_maps_the_bytes_of_the_files_without_a_copy(shared: SharedSplits) -> None:
    handles = shared.final(DATASET)
    assert handles is not None
    for split in ("train", "test"):
        from_files, mapped, again = load_split(DATASET, split), handles.fetch(DATASET, split), handles.fetch(DATASET, split)
        assert mapped is not None and again is not None
        assert torch.equal(mapped.images, from_files.images) and torch.equal(mapped.labels, from_files.labels)
        assert mapped.images.data_ptr() == again.images.data_ptr()  # both map the one copy in shared memory
    assert shared.share(DATASET, "train") is shared.share(DATASET, "train")  # put once
    assert handles.fetch("digits", "train") is None  # a split the handle does not carry: the caller reads files


def test_a_tuning_handle_carries_the_train_split_only_and_test_is_refused_while_sealed(shared: SharedSplits) -> None:
    tuning = shared.tuning(DATASET)
    assert tuning is not None and [s.holds for s in tuning.splits] == [f"{DATASET}:train"]
    final = shared.final(DATASET)
    assert final is not None
    with sealed_test_split(), pytest.raises(SealedSplitError, match="sealed"):
        final.fetch(DATASET, "test")
    with audit.recording(audit.DeclaredFiles({}, frozenset())) as record, training_window(), \
            pytest.raises(SealBrokenError, match=f"object-store split {DATASET}:test while training"):
        audit.received(f"{DATASET}:test", "digest")  # the audit's own rule, beneath the API's
    assert record.refused


def test_a_tuning_trial_on_shared_splits_opens_no_file_and_scores_as_from_the_files(shared: SharedSplits) -> None:
    clear_cache()
    from_files: list[dict] = []
    tuning_trial(spec(), from_files.append)
    clear_cache()
    mapped: list[dict] = []
    outcome = tuning_trial(dataclasses.replace(spec(), data=shared.tuning(DATASET)), mapped.append)
    assert [r["val/accuracy"] for r in mapped] == [r["val/accuracy"] for r in from_files]
    assert reads(outcome) == [{"object": f"{DATASET}:train", "holds": f"{DATASET}:train", "while_training": False,
                               "digest": shared.share(DATASET, "train").digest}]
    assert outcome["audit_digest"] == audit.record_digest(outcome["data_files_read"])


def test_an_oracle_trial_reads_its_test_sample_from_the_files(shared: SharedSplits) -> None:
    clear_cache()
    outcome = tuning_trial(dataclasses.replace(spec("oracle"), data=shared.tuning(DATASET)), lambda metrics: None)
    assert [read.get("object") for read in reads(outcome)] == [f"{DATASET}:train", None]
    assert reads(outcome)[1]["file"].endswith("digits.csv.gz")  # no test split's reference reaches tuning


def test_a_final_run_on_shared_splits_gives_the_same_row_and_writes_nothing_into_them(shared: SharedSplits) -> None:
    import ray

    clear_cache()
    from_files = final_run(spec())
    mapped = final_run(dataclasses.replace(spec(), data=shared.final(DATASET)))
    for column in ("test/accuracy", "train/final_loss", "train/steps", "splits_read"):
        assert mapped[column] == from_files[column], column
    assert [(read["object"], read["while_training"]) for read in reads(mapped)] == [
        (f"{DATASET}:train", False), (f"{DATASET}:test", False)]  # test received once training was done
    for split in ("train", "test"):
        put = shared.share(DATASET, split)
        assert split_digest(*ray.get(put.ref)) == put.digest  # the shared bytes are as they were put
