"""`netgraft demo` end to end, shortened."""
from netgraft.demo import run_demo


def test_demo_compares_a_function_preserving_graft_with_the_source_like_for_like():
    rows = run_demo(steps=2, source_steps=20, targets=("resnet34",))
    (row,) = rows
    assert row["target"] == "resnet34" and row["coverage"] > 0.99
    # resnet34 computes resnet18's function and both re-estimate their norms on the same
    # calibration images: the graft starts at the recalibrated source's accuracy
    assert abs(row["graft_0"] - row["source_recalibrated"]) < 2e-3
    assert 0.0 <= row["source"] <= 1.0 and 0.0 <= row["random_0"] <= 0.3
