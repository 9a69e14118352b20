"""The stem's large-kernel convolutions in training, at the rate of a matrix multiply.

The cross-scale embedding's stem convolves the image with 4x4, 8x8, 16x16 and 32x32 kernels at stride 4.
On the CPU the backward of the large ones (their weight gradient: the stem's input needs no gradient) runs
far below GEMM rate: a direct convolution with 3 input channels and a 32x32 kernel gives oneDNN little to
vectorise. A convolution whose kernel ``k`` is a multiple of its stride ``s`` is the same sum as a stride-1
convolution with a ``k/s x k/s`` kernel over ``C*s*s`` channels, once the input is cut into ``s x s`` blocks
("space to depth") and the weight is cut the same way::

    x (B, C, H, W), padded by (k - s) / 2  ->  (B, C*s*s, H/s + k/s - 1, W/s + k/s - 1)
    weight (O, C, k, k)                    ->  (O, C*s*s, k/s, k/s)

Both rearrangements are views plus one copy; autograd differentiates through them, so the weight gradient
arrives in the module's own layout. The sums are the same terms in another order: outputs and gradients
agree with the direct convolution to float rounding (tests/runtime/test_conv.py).

Measured (2 threads, batch 32, 224x224, forward + backward, ms; docs/benchmarks.md): kernel 32 from 292 to
80 (AVX-512) and from 396 to 141 (AVX2), kernel 16 from 69 to 28 and from 100 to 57. Kernels of 4 and 8,
the stride-2 merges, and inference (no weight gradient) are faster direct, so
:func:`crossformer_vision.runtime.dispatch.conv_in_blocks` picks this path only for kernels of at least
four times the stride, in CPU training.
"""
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["blockable", "space_to_depth_conv"]


def blockable(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` has the shape :func:`space_to_depth_conv` computes: square kernel ``k`` and stride ``s``
    with ``k % s == 0``, padding ``(k - s) / 2`` with zeros, no dilation, no groups."""
    k, s = conv.kernel_size, conv.stride
    return (
        k[0] == k[1]
        and s[0] == s[1]
        and k[0] % s[0] == 0
        and conv.padding == ((k[0] - s[0]) // 2,) * 2
        and (k[0] - s[0]) % 2 == 0
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def space_to_depth_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(x)`` for a :func:`blockable` convolution, as a stride-1 convolution of ``s x s`` blocks.

    Args:
        x: ``(B, C, H, W)``; any ``H, W >= s`` (the output is ``floor(H / s) x floor(W / s)`` as for ``conv``).
        conv: The convolution whose weight and bias are used.
    """
    k, s = conv.kernel_size[0], conv.stride[0]
    n, pad = k // s, (k - s) // 2
    batch, channels, height, width = x.shape
    out_h, out_w = height // s, width // s
    # the rows and columns the direct convolution reads: out * s + k - s of the padded input (cropping the
    # remainder a floor division drops)
    rows, cols = out_h * s + k - s, out_w * s + k - s
    x = F.pad(x, (pad, cols - width - pad, pad, rows - height - pad))
    blocks_h, blocks_w = out_h + n - 1, out_w + n - 1
    x = x.reshape(batch, channels, blocks_h, s, blocks_w, s).permute(0, 1, 3, 5, 2, 4)
    x = x.reshape(batch, channels * s * s, blocks_h, blocks_w)
    out_channels = conv.weight.shape[0]
    weight = conv.weight.reshape(out_channels, channels, n, s, n, s).permute(0, 1, 3, 5, 2, 4)
    weight = weight.reshape(out_channels, channels * s * s, n, n)
    return F.conv2d(x, weight, conv.bias)
