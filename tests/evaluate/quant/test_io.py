"""Save/load of a quantized ViT: integer codes + scales in safetensors, settings in JSON, same logits back."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from pipeline.evaluate.quant.io import load_quantized, save_quantized
from pipeline.evaluate.quant.model import QuantSettings, quantize_vit
from tests.evaluate.quant.test_model import _vit


@pytest.mark.parametrize("settings", [QuantSettings(w_bits=4, a_bits=4),
                                      QuantSettings(w_bits=6, a_bits=8, post_ln="per_channel", gelu="twin")])
def test_round_trip_gives_the_same_logits(tmp_path, settings):
    model = _vit(init_values=0.1)
    qv = quantize_vit(model, torch.randn(16, 3, 16, 16), settings)
    save_quantized(qv, tmp_path / "q", meta={"teacher": "t", "top1": 0.5})
    loaded, meta = load_quantized(tmp_path / "q")
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), qv(x))
    assert meta == {"teacher": "t", "top1": 0.5} and loaded.settings == settings
    tensors = load_file(str(tmp_path / "q" / "model.safetensors"))
    codes = tensors["weight.blocks.0.attn.qkv.weight.codes"]
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 2**settings.w_bits - 1
    assert not any(k.startswith("param.") and k.endswith("qkv.weight") for k in tensors)  # no float copy of weights
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["acts"]["blocks.1.softmax"]["kind"] == "log2"


def test_load_refuses_other_folders(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format"):
        load_quantized(tmp_path)
