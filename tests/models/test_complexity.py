"""FLOP counting in the fvcore convention, including attention that fvcore does not count."""

import subprocess
import sys
from pathlib import Path

import torch

from videocls import create_model, get_model_config
from videocls.models.complexity import count_gflops, count_parameters, example_input
from videocls.models.layers.attention import Attention

REPO = Path(__file__).resolve().parents[2]


def test_attention_flops_by_hand():
    batch, tokens, dim, heads = 2, 10, 16, 4
    layer = Attention(dim, heads)
    # qkv projection + q@k^T + attn@v + output projection, in multiply-adds
    expected = batch * tokens * dim * 3 * dim + 2 * batch * tokens * tokens * dim + batch * tokens * dim * dim
    assert count_gflops(layer, torch.randn(batch, tokens, dim)) * 1e9 == expected


def test_slowfast_example_input_is_two_pathways():
    slow, fast = example_input(get_model_config("slowfast_r50"), (32, 16, 16))
    assert fast.shape == (1, 3, 32, 16, 16) and slow.shape == (1, 3, 8, 16, 16)


def test_c2d_gflops_match_the_reference_table():
    model = create_model("c2d_r50")
    config = get_model_config("c2d_r50")
    assert abs(count_parameters(model) / 1e6 - config.reference_params_m) / config.reference_params_m < 0.005
    # 8x256x256 is 25.6 GFLOPs; a quarter of the pixels (8x128x128) is a quarter of the work.
    assert abs(count_gflops(model, example_input(config, (8, 128, 128))) * 4 - 25.6) / 25.6 < 0.05


def test_model_info_tool_prints_parameters():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "model_info.py"), "i3d_r50", "--no-flops"],
                         capture_output=True, text=True, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith("i3d_r50"))
    assert row.split()[1:3] == ["28.04", "28.04"]
