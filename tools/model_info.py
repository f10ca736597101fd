"""Parameters and GFLOPs of registered models at their reference input, against the papers'.

    python tools/model_info.py                 # every registered model (slow: full-size forwards)
    python tools/model_info.py c2d_r50 i3d_r50 --no-flops
    python tools/model_info.py i3d_r50 --kwargs   # the model config keys (model.KEY=...) and defaults
"""

import argparse

from videocls import create_model, get_model_config, list_models
from videocls.models.complexity import count_gflops, count_parameters, example_input
from videocls.models.registry import builder_kwargs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="*", help="registered names (default: all)")
    parser.add_argument("--no-flops", action="store_true", help="parameters only")
    parser.add_argument("--kwargs", action="store_true",
                        help="list each model's builder keywords (model config keys) and defaults instead")
    args = parser.parse_args()
    if args.kwargs:
        for name in args.models or list_models():
            print(f"{name}:")
            for key, default in builder_kwargs(name).items():
                print(f"  {key}: {default!r}")
        return
    print(f"{'model':<20} {'params (M)':>11} {'ref':>8} {'GFLOPs':>8} {'ref':>8}  input (T,H,W)")
    for name in args.models or list_models():
        config = get_model_config(name)
        model = create_model(name)
        params = count_parameters(model) / 1e6
        gflops = float("nan") if args.no_flops else count_gflops(model, example_input(config))
        ref_p = f"{config.reference_params_m:.2f}" if config.reference_params_m else "-"
        ref_f = f"{config.reference_gflops:.1f}" if config.reference_gflops else "-"
        print(f"{name:<20} {params:>11.2f} {ref_p:>8} {gflops:>8.1f} {ref_f:>8}  {config.flops_input}")


if __name__ == "__main__":
    main()
