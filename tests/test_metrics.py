"""The metric writer of a multi-host run."""

from metaunlab.train.metrics import MetricWriter, read_metrics


def test_only_the_writing_process_creates_metric_files(tmp_path, monkeypatch):
    """A non-primary process of a multi-host run leaves the shared work dir untouched (it
    used to create an empty TensorBoard event file beside process 0's)."""
    from metaunlab.train import metrics

    monkeypatch.setattr(metrics, "is_primary", lambda: False)
    writer = MetricWriter(tmp_path / "w")
    writer.write("metatrain", 1, loss=1.0)
    writer.close()
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())
    assert read_metrics(tmp_path / "w") == []


def test_a_resumed_phase_forgets_what_it_logged_after_its_checkpoint(tmp_path):
    writer = MetricWriter(tmp_path)
    for step in (5, 10, 15):
        writer.write("metatrain_5way_1shot", step, loss=1.0)
        writer.write("metatrain_5way_1shot_val", step, accuracy=50.0)
    writer.write("pretrain", 12, loss=2.0)
    writer.forget_after("metatrain_5way_1shot", 10)  # resumed from its step-10 checkpoint
    records = read_metrics(tmp_path)
    assert [(r["phase"], r["step"]) for r in records] == [
        ("metatrain_5way_1shot", 5), ("metatrain_5way_1shot_val", 5),
        ("metatrain_5way_1shot", 10), ("metatrain_5way_1shot_val", 10), ("pretrain", 12)]
    writer.close()
