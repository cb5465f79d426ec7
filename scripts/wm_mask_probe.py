"""Screen (session 36): can a small convolutional network correct the particle prior's final
object mask, from the clips `train-world-model` cached? Not part of the product: it asked
whether the bags hold a learnable correction at all before the world model's `loss: mask`
was built. Per-pixel object logits = the prior's mask (±3) + the network's output, binary
cross-entropy inside the gate (the prior's or the current object's pixels grown by GATE
px); validation = episodes whose number ends in 0. Prints, per task, (IoU, mask measure)
of the final frame against the truth for the prior, the network and copying.

    python scripts/wm_mask_probe.py CACHE PRIOR_FOLDER [STEPS [GATE [no-action]]]

`no-action` zeroes the pick and place channels (session 38: does the network need to be
told where the gripper went, or does the prior's frame carry it?).

Needs torch, scipy and safetensors (scripts/requirements-hf.txt plus scipy)."""
import json, sys, time, glob
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from safetensors.numpy import load_file
torch.set_num_threads(2); torch.manual_seed(0)
cache = sys.argv[1]; prior_dir = sys.argv[2]; steps = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
idx = json.load(open(f"{cache}/index.json"))
clips = idx["clips"]; H, W = 64, 128
ctx = []; fut = []; pri = []
for s in sorted({c["shard"] for c in clips}):
    d = load_file(f"{cache}/shard-{s:05d}.safetensors"); p = load_file(f"{cache}/{prior_dir}/shard-{s:05d}.safetensors")
    ctx.append(d["context"]); fut.append(d["future"][:, -1]); pri.append(p["prior"][:, -1])
ctx = np.concatenate(ctx); fut = np.concatenate(fut); pri = np.concatenate(pri)
n = len(clips); assert len(ctx) == n, (len(ctx), n)
def bg(img):
    b = np.concatenate([img[:, 0], img[:, -1], img[:, 1:-1, 0], img[:, 1:-1, -1]], 1)
    return np.median(b, 1)[:, None, None, :]
def objmask(img):
    return (np.abs(img.astype(np.int32) - bg(img).astype(np.int32)).sum(-1) > 24)
cm, tm, pm = objmask(ctx), objmask(fut), objmask(pri)
tasks = ["cloth", "rope", "toy"]
task = np.array([tasks.index(c["task"]) for c in clips])
yy, xx = np.mgrid[0:H, 0:W]
def heat(pt):
    return np.exp(-((xx - pt[0]) ** 2 + (yy - pt[1]) ** 2) / (2 * 2.0 ** 2))
pick = np.stack([heat(c["grip"]["pick"]) for c in clips])
place = np.stack([heat(np.array(c["grip"]["pick"]) + np.array(c["grip"]["offsets"][-1])) for c in clips])
onehot = np.zeros((n, 3, H, W), np.float32); onehot[np.arange(n), task] = 1
X = np.concatenate([ctx.transpose(0, 3, 1, 2) / 255.0, pri.transpose(0, 3, 1, 2) / 255.0,
                    cm[:, None], pm[:, None], pick[:, None], place[:, None], onehot], 1).astype(np.float32)
if len(sys.argv) > 5 and sys.argv[5] == "no-action":
    X[:, 8:10] = 0
Y = tm.astype(np.float32)
def dilate(m, r):
    t = torch.from_numpy(m.astype(np.float32))[:, None]
    return (F.max_pool2d(t, 2 * r + 1, 1, r)[:, 0] > 0).numpy()
gate = dilate(cm | pm, int(sys.argv[4]) if len(sys.argv) > 4 else 3)
ep = np.array([c["episode"] for c in clips]); val = (ep % 10) == 0
print(f"{n} clips, {val.sum()} validation; target outside gate: {(tm & ~gate).sum() / tm.sum():.3f} of object px")
class Net(nn.Module):
    def __init__(s, c=X.shape[1], w=32):
        super().__init__()
        s.a = nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU())
        s.b = nn.Sequential(nn.Conv2d(w, 2 * w, 3, 2, 1), nn.GELU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU())
        s.c = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, 2, 1), nn.GELU(), nn.Conv2d(2 * w, 2 * w, 3, padding=2, dilation=2), nn.GELU(),
                            nn.Conv2d(2 * w, 2 * w, 3, padding=4, dilation=4), nn.GELU())
        s.u1 = nn.Conv2d(4 * w, w, 3, padding=1); s.u2 = nn.Conv2d(2 * w, w, 3, padding=1); s.o = nn.Conv2d(w, 1, 1)
        nn.init.zeros_(s.o.weight); nn.init.zeros_(s.o.bias)
    def forward(s, x):
        a = s.a(x); b = s.b(a); c = s.c(b)
        u = F.gelu(s.u1(torch.cat([F.interpolate(c, scale_factor=2), b], 1)))
        u = F.gelu(s.u2(torch.cat([F.interpolate(u, scale_factor=2), a], 1)))
        return s.o(u)[:, 0] + (x[:, 7] * 6 - 3)   # base logit: the prior's mask
net = Net(); opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
tr = np.nonzero(~val)[0]; va = np.nonzero(val)[0]
Xt, Yt, Gt = torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(gate.astype(np.float32))
def side_measure(o, g):
    from scipy.ndimage import distance_transform_edt as edt
    if o.sum() == 0 or g.sum() == 0: return 0.0
    dg, do = edt(~g), edt(~o)
    to_goal, to_out = dg[o], do[g]
    reach = max(np.percentile(to_goal, 90), np.percentile(to_out, 90))
    d = (to_out.mean() + 0.5 * reach) / 1.5
    return float(np.exp(-d / (0.05 * min(o.shape))))
def evaluate():
    net.eval(); out = {}
    with torch.no_grad():
        lg = torch.cat([net(Xt[va[i:i + 64]]) for i in range(0, len(va), 64)])
    pred = ((lg > 0).numpy() & gate[va]) | (pm[va] & ~gate[va])
    for k, t in enumerate(tasks):
        sel = task[va] == k
        r = {}
        for name, m in (("prior", pm[va]), ("net", pred), ("copy", cm[va])):
            iou = [(a & b).sum() / max((a | b).sum(), 1) for a, b in zip(m[sel], tm[va][sel])]
            ms = [side_measure(a, b) for a, b in zip(m[sel], tm[va][sel])]
            r[name] = (round(float(np.mean(iou)), 3), round(float(np.mean(ms)), 3))
        out[t] = r
    net.train(); return out
print("start", evaluate(), flush=True)
t0 = time.time(); rng = np.random.default_rng(0)
for step in range(1, steps + 1):
    b = rng.choice(tr, 32)
    lg = net(Xt[b]); l = F.binary_cross_entropy_with_logits(lg, Yt[b], reduction="none")
    loss = (l * Gt[b]).sum() / Gt[b].sum()
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 250 == 0:
        print(step, f"{loss.item():.4f}", f"{time.time() - t0:.0f}s", evaluate(), flush=True)
