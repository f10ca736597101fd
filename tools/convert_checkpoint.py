"""Convert a foreign checkpoint (PySlowFast/pytorchvideo .pyth, DeepMind I3D pickle, safetensors,
torch) into a plain videocls state dict, checked by loading it strictly into the named model.

    python tools/convert_checkpoint.py ../shared/weights/i3d-kinetics-400.ckpt \
        checkpoints/i3d_inception_v1_k400.safetensors --model i3d_inception_v1
    python tools/convert_checkpoint.py I3D_tiny.pyth i3d_tiny.pt --model i3d_r50 \
        --override width=8 "stage_blocks=(1, 1, 1, 1)"

DST ending in .safetensors gets a safetensors file; any other name a torch.save of a dict of
tensors (readable with torch.load(DST, weights_only=True)). --override values are Python
literals (8, 0.5, (1, 1, 1, 1), True); anything else is passed as a string.

DST is never SRC, and an existing DST (a training last.pt, say) is refused before any work
unless --force is given; the new file is renamed onto DST only once it is complete.
"""

import argparse
import ast
import sys

from videocls.models.registry import convert_checkpoint  # importing videocls.models registers them all


def _override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="checkpoint to convert (any format create_model(pretrained=...) reads)")
    parser.add_argument("dst", help="output file: .safetensors, or anything else for torch.save")
    parser.add_argument("--model", required=True, help="registered model name (see videocls.list_models())")
    parser.add_argument("--num-classes", type=int, help="default: the checkpoint's classifier size")
    parser.add_argument("--override", type=_override, nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE", help="model builder arguments, e.g. width=8 dropout=0.0")
    parser.add_argument("--force", action="store_true", help="overwrite an existing DST (never SRC itself)")
    args = parser.parse_args()
    try:
        result = convert_checkpoint(
            args.src, args.dst, args.model, args.num_classes, overwrite=args.force, **dict(args.override)
        )
        print(result)
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
