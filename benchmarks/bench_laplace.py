"""Benchmark: igbook.laplace against laplace-torch, and the calibration of Laplace predictives.

1. **Speed.** On the digits MAP classifier of :mod:`igbook.experiments.laplace` (64-32-10, tanh,
   float64, 1,347 training and 450 test points), the time to fit each structure (full, diagonal,
   K-FAC, each on all weights and on the last layer) and to compute the GLM probit predictive on
   the test set, for ``igbook.laplace`` and for laplace-torch (default CurvlinopsGGN backend) on
   the same model and data, measured alternately in one run (median over repeats, one thread);
   the ratio is igbook's time over laplace-torch's (below 1: igbook is faster). laplace-torch is
   timed with each of its three GGN backends (CurvlinopsGGN, its default; BackPackGGN; AsdlGGN),
   and the table gives the ratio to the default and to the fastest backend for each structure.
   The largest difference of the two posterior precisions and predictives is reported as well.
2. **Calibration.** On breast cancer and digits: test accuracy, NLL, ECE (10 bins) of the MAP,
   the diagonal, K-FAC and full GLM-probit Laplace predictives (prior precision maximizing the
   Laplace evidence), and IVON (the BLR chapter's digits settings, 64 ReLU units, 32 samples);
   on digits also the out-of-distribution AUC of the predictive entropy against permuted-pixel
   test images (:func:`igbook.continual.ood_digits`).

Prints the tables and writes ``benchmarks/results/laplace.json``.
Run: ``.venv/bin/python benchmarks/bench_laplace.py [--repeats 3] [--speed-only]`` (a few
minutes; ``--speed-only`` keeps the calibration tables of the existing results file).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from igbook.continual import entropy, ood_digits, roc_auc
from igbook.experiments.blr import evaluate_classifier, train_classifier
from igbook.experiments.laplace import classifier_map
from igbook.laplace import fit_laplace, optimize_prior_precision, predictive
from igbook.optim.sampling import classification_metrics

RESULTS = Path(__file__).resolve().parent / "results" / "laplace.json"
HS = {"full": "full", "diagonal": "diag", "kron": "kron"}


def _dense(la: Any, structure: str) -> torch.Tensor:
    p = la.posterior_precision
    if structure == "full":
        return p
    if structure == "diagonal":
        return torch.diag(p)
    return p.to_matrix()


def speed(repeats: int) -> list[dict[str, Any]]:
    import laplace
    from laplace.curvature import AsdlGGN, BackPackGGN, CurvlinopsGGN

    backends = {"curvlinops": CurvlinopsGGN, "backpack": BackPackGGN, "asdl": AsdlGGN}

    model, data = classifier_map("digits")
    x, y, xt = data.x_train, data.y_train, data.x_test
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    rows = []
    for structure in ("full", "diagonal", "kron"):
        for subset in ("all", "last_layer"):
            t: dict[str, list[float]] = {"igbook_fit": [], "igbook_pred": []}
            for name in backends:
                t[f"{name}_fit"], t[f"{name}_pred"] = [], []
            diffs = {"precision": 0.0, "predictive": 0.0}
            for _ in range(repeats):
                t0 = time.perf_counter()
                post = fit_laplace(model, x, y, "categorical", structure=structure, subset=subset)
                t["igbook_fit"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ours = predictive(post, xt)
                t["igbook_pred"].append(time.perf_counter() - t0)
                for name, backend in backends.items():
                    t0 = time.perf_counter()
                    la = laplace.Laplace(
                        copy.deepcopy(model),  # BackPACK extends the model it is given
                        "classification",
                        subset_of_weights=subset,
                        hessian_structure=HS[structure],
                        backend=backend,
                    )
                    la.fit(loader)
                    _ = la.posterior_precision
                    t[f"{name}_fit"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    theirs = la(xt, pred_type="glm", link_approx="probit").detach()
                    t[f"{name}_pred"].append(time.perf_counter() - t0)
                    diffs["precision"] = max(
                        diffs["precision"],
                        float((post.precision().to_dense() - _dense(la, structure)).abs().max()),
                    )
                    diffs["predictive"] = max(
                        diffs["predictive"], float((ours - theirs).abs().max())
                    )
            med = {k: statistics.median(v) for k, v in t.items()}
            fastest = min(backends, key=lambda b: med[f"{b}_fit"])
            fastest_pred = min(backends, key=lambda b: med[f"{b}_pred"])
            rows.append(
                {
                    "structure": structure,
                    "subset": subset,
                    "parameters": post.size,
                    "igbook_fit_s": round(med["igbook_fit"], 4),
                    **{f"{b}_fit_s": round(med[f"{b}_fit"], 4) for b in backends},
                    "fit_ratio": float(f"{med['igbook_fit'] / med['curvlinops_fit']:.3g}"),
                    "fastest_backend_fit": fastest,
                    "fit_ratio_to_fastest": float(
                        f"{med['igbook_fit'] / med[f'{fastest}_fit']:.3g}"
                    ),
                    "igbook_predict_s": round(med["igbook_pred"], 4),
                    **{f"{b}_predict_s": round(med[f"{b}_pred"], 4) for b in backends},
                    "predict_ratio": float(f"{med['igbook_pred'] / med['curvlinops_pred']:.3g}"),
                    "predict_ratio_to_fastest": float(
                        f"{med['igbook_pred'] / med[f'{fastest_pred}_pred']:.3g}"
                    ),
                    "max_precision_diff": diffs["precision"],
                    "max_predictive_diff": diffs["predictive"],
                }
            )
            print(rows[-1])
    return rows


def calibration() -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name in ("breast_cancer", "digits"):
        model, data = classifier_map(name)
        xt, yt = data.x_test, data.y_test
        x_ood = ood_digits(dtype=torch.float64) if name == "digits" else None
        out: dict[str, dict[str, float]] = {}

        def record(
            key: str,
            probs_in: torch.Tensor,
            probs_out: torch.Tensor | None,
            yt: torch.Tensor = yt,
            out: dict[str, dict[str, float]] = out,
        ) -> None:
            m = classification_metrics(probs_in, yt)
            row = {"accuracy": m.accuracy, "nll": m.nll, "ece": m.ece}
            if probs_out is not None:
                row["ood_auc"] = roc_auc(entropy(probs_in), entropy(probs_out))
            out[key] = {k: round(v, 4) for k, v in row.items()}

        with torch.no_grad():
            record(
                "MAP",
                model(xt).softmax(-1),
                model(x_ood).softmax(-1) if x_ood is not None else None,
            )
        for structure in ("diagonal", "kron", "full"):
            post = fit_laplace(
                model, data.x_train, data.y_train, "categorical", structure=structure
            )
            post = optimize_prior_precision(post, method="marglik")
            record(
                f"{structure} Laplace (delta={post.prior_precision:.3g})",
                predictive(post, xt),
                predictive(post, x_ood) if x_ood is not None else None,
            )
        ivon = train_classifier(
            "IVON", data.x_train, data.y_train, num_classes=data.num_classes, seed=0
        )
        probs = evaluate_classifier(ivon, xt, yt)["IVON"][1]
        probs_ood = (
            evaluate_classifier(ivon, x_ood, torch.zeros(len(x_ood), dtype=torch.long))["IVON"][1]
            if x_ood is not None
            else None
        )
        record("IVON (64 ReLU units)", probs, probs_ood)
        table[name] = out
        for k, r in out.items():
            print(name, k, r)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--speed-only",
        action="store_true",
        help="measure the speed table only; keep the calibration of the existing results file",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", category=UserWarning)
    result = {
        "benchmark": "igbook.laplace against laplace-torch (speed) and calibration of Laplace predictives",
        "settings": {
            "speed_model": "experiments.laplace.classifier_map('digits'): 64-32-10 tanh, float64",
            "laplace_torch_backends": "CurvlinopsGGN (default; the fit_ratio and predict_ratio "
            "columns), BackPackGGN, AsdlGGN (the *_to_fastest columns: the fastest of the three)",
            "repeats": args.repeats,
            "threads": 1,
            "predictive": "GLM, probit link",
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "processor": platform.machine(),
        },
        "speed": speed(args.repeats),
        "calibration": (
            json.loads(RESULTS.read_text())["calibration"] if args.speed_only else calibration()
        ),
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
