"""Post-build check, as the original CARAFE release had (`python ./carafe/grad_check.py`):
gradcheck of the compiled op in float64 on every available device, agreement
with the pure-PyTorch reference in float32, and a timing against the
reference. Prints a line per check and exits non-zero if any fails.

    python -m carafe.grad_check [--quick]
"""

import argparse
import sys
import time

import torch

import carafe
from carafe.reference import carafe_reference, random_inputs


def _inputs(N, C, H, W, k, G, s, dtype, device, seed=0):
    return random_inputs(
        N, C, H, W, k, G, s, dtype=dtype, device=device, seed=seed, requires_grad=True
    )


def _time(fn, repeat=5):
    fn()
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller timing problem")
    args = parser.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if carafe.cuda_available() else [])
    print(
        f"carafe {carafe.__version__}, torch {torch.__version__}; devices: {', '.join(devices)}"
        f" (CUDA kernels built: {carafe.has_kernel('cuda')}, GPU visible: "
        f"{torch.cuda.is_available()})"
    )
    failures = 0
    for device in devices:
        # Small maps: gradgradcheck builds dense Jacobians over every mask entry.
        for k, G, s in [(5, 1, 2), (3, 2, 2), (3, 4, 3)]:
            f, m = _inputs(1, 8, 3, 4, k, G, s, torch.float64, device)
            fn = lambda a, b: carafe.carafe(a, b, k, G, s)  # noqa: E731
            ok = torch.autograd.gradcheck(fn, (f, m), raise_exception=False)
            ok2 = torch.autograd.gradgradcheck(fn, (f, m), raise_exception=False)
            failures += (not ok) + (not ok2)
            print(f"[{device}] gradcheck k={k} G={G} s={s}: {ok}; gradgradcheck: {ok2}")
        f, m = _inputs(2, 16, 12, 15, 5, 2, 2, torch.float32, device)
        out = carafe.carafe(f, m, 5, 2, 2)
        out.backward(torch.ones_like(out))
        ff, mm = f.detach().double().requires_grad_(), m.detach().double().requires_grad_()
        ref = carafe_reference(ff, mm, 5, 2, 2)
        ref.backward(torch.ones_like(ref))
        errs = [
            (out.double() - ref).abs().max().item(),
            (f.grad.double() - ff.grad).abs().max().item(),
            (m.grad.double() - mm.grad).abs().max().item(),
        ]
        ok = max(errs) < 1e-4
        failures += not ok
        print(
            f"[{device}] float32 vs reference: max |diff| output {errs[0]:.2e}, "
            f"grad_features {errs[1]:.2e}, grad_masks {errs[2]:.2e}: {ok}"
        )
        shape = (2, 64, 24, 32) if args.quick else (2, 256, 50, 76)
        f, m = _inputs(*shape, 5, 1, 2, torch.float32, device)
        with torch.no_grad():
            ours = _time(lambda: carafe.carafe(f, m, 5, 1, 2))
            spec = _time(lambda: carafe_reference(f, m, 5, 1, 2), repeat=2)
        print(
            f"[{device}] forward {tuple(shape)} x2, k=5: carafe {ours * 1e3:.2f} ms, "
            f"reference {spec * 1e3:.2f} ms ({spec / ours:.1f}x)"
        )
    print("all checks passed" if failures == 0 else f"{failures} check(s) FAILED")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
