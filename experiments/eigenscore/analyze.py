"""Post-hoc analysis of ood.json files: AUROC with its bootstrap SE, the flipped sign, each feature's AUROC and
means, every contiguous σ window, and (mnist_near) the mean score per digit class and the ink confound.

    python experiments/eigenscore/analyze.py <run>/ood.json [...]
"""
import json, sys, itertools
import numpy as np
from invlab.analysis.auroc import auroc
from invlab.data.datasets import mnist

def std_scores(F, cols, fitF):
    mu, sd = fitF[:, cols].mean(0), fitF[:, cols].std(0)
    sd[sd == 0] = 1
    return ((F[:, cols] - mu) / sd).sum(1)

for path in sys.argv[1:]:
    r = json.load(open(path))
    names = r["features"]["names"]
    fit, fid, food = (np.asarray(r["features"][k]) for k in ("fit", "id", "ood"))
    print(f"== {path}: {r['detector']} {r['pair']} prior={r['prior']} n={r['n_fit'], r['n_id'], r['n_ood']} "
          f"AUROC {r['auroc']:.3f} ({r['seconds']:.0f} s)")
    rng = np.random.default_rng(0)
    s_id, s_ood = np.asarray(r["scores"]["id"]), np.asarray(r["scores"]["ood"])
    boots = [auroc(rng.choice(s_id, len(s_id)), rng.choice(s_ood, len(s_ood))) for _ in range(500)]
    print(f"  bootstrap SE of the AUROC {np.std(boots):.3f}; flipped sign (lower = more OOD): {1 - r['auroc']:.3f}")
    for j, n in enumerate(names):
        print(f"  {n}: AUROC {auroc(fid[:, j], food[:, j]):.3f}  mean fit {fit[:, j].mean():.5g} id {fid[:, j].mean():.5g} ood {food[:, j].mean():.5g}")
    # contiguous σ windows (features grouped by σ in name order sorted by σ)
    sig = sorted({float(n.split("@")[1]) for n in names})
    for a, b in itertools.combinations_with_replacement(range(len(sig)), 2):
        cols = [j for j, n in enumerate(names) if sig[a] <= float(n.split("@")[1]) <= sig[b]]
        print(f"  window σ {sig[a]:g}..{sig[b]:g}: AUROC {auroc(std_scores(fid, cols, fit), std_scores(food, cols, fit)):.3f}")
    if r["pair"] == "mnist_near":
        n_id, n_ood = r["n_id"], r["n_ood"]
        lid = np.asarray([mnist(split="test", classes=[0, 1, 2, 3, 4], size=28, limit=n_id)[i]["label"] for i in range(n_id)])
        lood = np.asarray([mnist(split="test", classes=[5, 6, 7, 8, 9], size=28, limit=n_ood)[i]["label"] for i in range(n_ood)])
        sc = np.r_[s_id, s_ood]; lab = np.r_[lid, lood]
        print("  mean score per class:", {int(c): round(float(sc[lab == c].mean()), 2) for c in range(10)})
        ink_id = np.asarray([np.asarray(mnist(split="test", classes=[0, 1, 2, 3, 4], size=28, limit=n_id)[i]["x"]).sum() for i in range(n_id)])
        ink_ood = np.asarray([np.asarray(mnist(split="test", classes=[5, 6, 7, 8, 9], size=28, limit=n_ood)[i]["x"]).sum() for i in range(n_ood)])
        print(f"  ink (sum of pixels) as the score: AUROC {auroc(ink_id, ink_ood):.3f}; corr(score, ink) "
              f"{np.corrcoef(sc, np.r_[ink_id, ink_ood])[0, 1]:.2f}")
