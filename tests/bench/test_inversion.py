import json

from pipeline.cli import main


def test_bench_json_reports_dense_and_sparse(capsys):
    code = main(["bench", "--quick", "--iterations", "24", "--stop-iterations", "4,8,12,16", "--batch", "2", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("dense_seconds", "sparse_seconds", "speedup", "flop_ratio", "model", "device", "iterations"):
        assert key in report
    assert report["iterations"] == 24 and report["device"] == "cpu"
    assert report["flop_ratio"] > 1.5  # 64 patches -> 17 kept
    assert report["speedup"] == report["dense_seconds"] / report["sparse_seconds"]


def test_bench_rejects_a_schedule_outside_the_run(capsys):
    assert main(["bench", "--quick", "--iterations", "10", "--stop-iterations", "5,20"]) == 2
    assert "schedule.iterations" in capsys.readouterr().err
