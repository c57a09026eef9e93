"""Opt-in torch.compile of the UNet (editors.compile): capture really happens and changes no output.

A counting backend stands in for inductor: it receives every graph dynamo captures and runs it as
traced, so the test checks the capture path in seconds without generating kernels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from editors.compile import compile_unet
from pie_bench.core.errors import ConfigError


class CountingBackend:
    def __init__(self):
        self.graphs = 0
        self.calls = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1

        def run(*args):
            self.calls += 1
            return gm.forward(*args)

        return run


def test_eager_is_the_module_itself_and_bad_mode_is_a_config_error():
    unet = torch.nn.Linear(2, 2)
    assert compile_unet(unet, "") is unet
    with pytest.raises(ConfigError, match="icd.torch_compile='fast'"):
        compile_unet(unet, "fast", editor="icd")


@pytest.mark.parametrize("name", ["ip2p", "icd"])
def test_compiled_unet_gives_the_eager_output(name, smoke):
    from editors.registry import get_editor_class

    torch._dynamo.reset()
    cls = get_editor_class(name)
    steps = {"num_inference_steps": 3} if name == "ip2p" else {}
    sample = next(s for s in smoke.samples if s.instruction and s.blended_words)
    eager = cls(**steps)
    eager.load("toy")
    ref = eager.edit(sample, torch.Generator().manual_seed(0)).image

    backend = CountingBackend()
    compiled = cls(**steps, torch_compile="default")
    compiled.config.compile_backend = backend
    compiled.load("toy")
    out = compiled.edit(sample, torch.Generator().manual_seed(0)).image
    assert backend.graphs >= 1 and backend.calls >= 3  # every sampling / forward step ran the captured graph
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    torch._dynamo.reset()


def test_icd_compile_needs_fused_adapters():
    from editors.icd import ICDEditor

    ed = ICDEditor(fuse_lora=False, torch_compile="default")
    with pytest.raises(ConfigError, match="fuse_lora"):
        ed.load("toy")
