import json

from pipeline.cli import main


def test_bench_json_reports_dense_and_sparse(capsys):
    code = main(["bench", "--quick", "--iterations", "24", "--stop-iterations", "4,8,12,16", "--batch", "2", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("dense_seconds", "sparse_seconds", "speedup", "flop_ratio", "model", "device", "iterations"):
        assert key in report
    assert report["iterations"] == 24 and report["device"] == "cpu" and report["patches"] == 64
    assert report["dense_seconds"] > 0 and report["sparse_seconds"] > 0
    assert len(report["dense_seconds_all"]) == len(report["sparse_seconds_all"]) == report["repeats"]
    # the quick model's 64 patches keep 70% at each stop: 45, 32, 23, then 17 until the end
    assert report["kept_final"] == 17
    # a ViT's FLOPs grow (to first order) with the tokens it carries (kept patches + the class token), so the
    # counted FLOP ratio is the schedule's token ratio: 24 iterations x 65 tokens against 4 x 65, 4 x 46,
    # 4 x 33, 4 x 24 and 8 x 18 tokens
    token_ratio = (24 * 65) / (4 * 65 + 4 * 46 + 4 * 33 + 4 * 24 + 8 * 18)
    assert abs(report["flop_ratio"] / token_ratio - 1) < 0.02, (report["flop_ratio"], token_ratio)


def test_bench_rejects_a_schedule_outside_the_run(capsys):
    assert main(["bench", "--quick", "--iterations", "10", "--stop-iterations", "5,20"]) == 2
    assert "schedule.iterations" in capsys.readouterr().err
