"""The bfloat16 training step per size (medium, large, wide): its bf16 floor
(the products through oneDNN from C), fastbp's bf16 step, PyTorch's
torch.autocast("cpu", torch.bfloat16) eager step, and fastbp's float32 step and
floor; `python -m fastbp bench --matmul-precision bfloat16` prints the same
comparison as a table, timed the same way (fastbp.bench_bf16)."""
import pytest

from fastbp import _bf16, bench_bf16
from bench.benchutil import have_torch, run

CONTENDERS = (["floor-bf16"] if "onednn" in _bf16.available() else []) + \
    ["fastbp-bf16"] + (["torch-autocast"] if have_torch() else []) + \
    ["fastbp-fp32", "floor-fp32"]


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("size", bench_bf16.SIZES)
def test_bf16_step(benchmark, size, contender):
    if contender == "floor-bf16" and _bf16.get_bf16_provider() != "onednn":
        pytest.skip("the bf16 floor needs the onednn path")
    fn = bench_bf16.contenders(size, only=contender)[contender]
    run(benchmark, fn, f"bf16-step-{size}", contender)
