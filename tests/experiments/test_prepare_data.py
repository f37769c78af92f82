"""`python -m experiments.prepare_data`: errors in one sentence."""


def test_prepare_data_cli_reports_errors_in_one_sentence(tmp_path, run_script):
    proc = run_script("experiments.prepare_data", "mini_imagenet",
                      f"--imagenet_dir={tmp_path / 'nowhere'}", f"--csv_dir={tmp_path}",
                      f"--out={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "nowhere" in proc.stderr
