"""The flow model's reconstruction check: Euler inversion then Euler sampling under the same prompt walks the
pipeline's own sigmas both ways, so on any velocity field its round-trip error shrinks with the step count."""
import numpy as np
import torch

from editors.flow_backbone import load_flow_backbone
from pie_bench.training.shapes_flow_evaluate import euler


def test_euler_inversion_round_trip_converges_on_the_toy_sd3():
    bb = load_flow_backbone("toy")
    z0 = bb.encode_image(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8))
    cond = bb.encode_prompt(["a red cube"])
    errors = []
    for steps in (4, 16, 64):
        z1 = euler(bb, z0, cond, None, 1.0, steps, invert=True)
        assert float((z1 - z0).abs().mean()) > 0.1  # it really went to noise
        errors.append(float((euler(bb, z1, cond, None, 1.0, steps, invert=False) - z0).abs().mean()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.5 * errors[0], errors


def test_both_evaluation_commands_print_their_figures_and_command(capsys):
    import json

    from pie_bench.training import shapes_evaluate, shapes_flow_evaluate

    for mod, what, steps in ((shapes_evaluate, "base", 50), (shapes_flow_evaluate, "follow", 28)):
        assert mod.evaluation_parser(mod.__doc__, (what,), steps, 1.0).parse_args([what]).steps == steps
        mod.main([what, "--n", "2", "--steps", "2"])
        res = json.loads(capsys.readouterr().out)
        assert res["command"] == f"python -m {mod.__name__} {what} --n 2 --steps 2" and res["n"] == 2
