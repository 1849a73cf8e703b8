"""Before/after figures for the pruning defects fixed by the pruning core (issue 18), measured
with the code of another source tree (the code before) and this one, in one run.

    .venv/bin/python benchmarks/pruning_defects.py --baseline-src /tmp/old   # ~1 min

``--baseline-src``: a directory holding the older ``coevo`` package with its operators at
``coevo/operators`` (see benchmarks/pruning_speed.py). Prints one line per figure and writes
``benchmarks/results/pruning_defects.json``:

- RANDOM's pruned share of encoder layer 0 at amount 0.1 (D = 1000, about 1,800 alive entries:
  the input units' protected weights were hidden from the count before);
- SNAP's first-layer neurons alive after a cut of 25% of the neurons at D = 1000 (a cut neuron
  kept the weights spared for the inputs before);
- whether an operator may leave a decoder layer with only biases (store_masks accepted it before);
- how often an early-bird decoder fires within 15 calls when its weights change every call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

MEASURE = r"""
import json
import numpy as np, torch
from coevo import operators
from coevo.config import PruneConfig
from coevo.population import Stack
from coevo.genome import autoencoder_layouts, init_params, Encoder, Decoder
from coevo.operators.base import PruneContext, LayerGradients

out = {}
enc_l, dec_l = autoencoder_layouts(1000, [30], 10)
rng = np.random.default_rng(0)
shares = []
for s in range(20):
    st = Stack.fresh(enc_l, init_params(enc_l, 1, rng))
    net = st.network(0, Encoder)
    l0 = net.layers[0]
    l0.weight_mask &= rng.random(l0.weight_mask.shape) < 1500 / 30000
    for c in np.flatnonzero(~l0.weight_mask.any(axis=0)):
        l0.weight_mask[rng.integers(30), c] = True
    alive = l0.alive
    operators.registry.get("random")(net, 0.1, np.random.default_rng(s), None)
    shares.append((alive - l0.alive) / alive)
out["random_layer0_share_at_amount_0.1"] = float(np.mean(shares))

st = Stack.fresh(enc_l, init_params(enc_l, 1, np.random.default_rng(3)))
net = st.network(0, Encoder)
grads = [LayerGradients(np.zeros(l.weight.shape), np.zeros(l.bias.shape), np.random.default_rng(i).random(l.bias.shape), 1.0)
         for i, l in enumerate(net.layers)]
ctx = PruneContext(0, PruneConfig(), record_gradients=lambda: {"encoder": grads})
operators.registry.get("snap")(net, 0.25, np.random.default_rng(0), ctx)
st.store_masks(0, net, "snap")
out["snap_first_layer_alive_of_30"] = int(st.network(0, Encoder).layers[0].alive_neurons().sum())

small = autoencoder_layouts(12, [6], 3)[1]
st = Stack.fresh(small, init_params(small, 1, np.random.default_rng(0)))
net = st.network(0, Decoder)
net.layers[0].weight_mask[:] = False
try:
    st.store_masks(0, net, "cutter")
    out["bias_only_layer_accepted"] = True
except Exception:
    out["bias_only_layer_accepted"] = False

size = operators.needs_of(operators.registry.lookup("early_bird")).memory_size(dec_l)
st = Stack.fresh(dec_l, init_params(dec_l, 1, np.random.default_rng(1)), memory=size)
fired = 0
for call in range(15):
    r = np.random.default_rng(100 + call)
    with torch.no_grad():
        st.params[0] = torch.as_tensor(r.normal(size=st.params.shape[1]), dtype=st.params.dtype)
    net = st.network(0, Decoder)
    c = PruneContext(3, PruneConfig(), declared_events=("early_bird",))
    operators.registry.get("early_bird")(net, 0.3, np.random.default_rng(call), c)
    st.store_masks(0, net, "early_bird")
    fired += bool(c.events)
out["early_bird_decoder_fired_in_15_calls"] = fired
print(json.dumps(out))
"""


def measure(src: str) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    done = subprocess.run([sys.executable, "-c", MEASURE], env=env, cwd="/", capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", required=True, help="a directory holding the older coevo package")
    args = parser.parse_args()
    before, after = measure(args.baseline_src), measure(str(ROOT))
    for key in after:
        print(f"{key:<40} before {before[key]!s:>8}   after {after[key]!s:>8}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pruning_defects.json").write_text(json.dumps({"before": before, "after": after}, indent=2) + "\n")


if __name__ == "__main__":
    main()
