"""The metric writer of a multi-host run."""

from metaunlab.metrics import MetricWriter, read_metrics


def test_only_the_writing_process_creates_metric_files(tmp_path, monkeypatch):
    """A non-primary process of a multi-host run leaves the shared work dir untouched (it
    used to create an empty TensorBoard event file beside process 0's)."""
    from metaunlab import metrics

    monkeypatch.setattr(metrics, "is_primary", lambda: False)
    writer = MetricWriter(tmp_path / "w")
    writer.write("metatrain", 1, loss=1.0)
    writer.close()
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())
    assert read_metrics(tmp_path / "w") == []
