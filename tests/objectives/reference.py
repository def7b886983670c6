"""Independent, deliberately slow implementations of the objective, written from docs/method.md.

Plain Python double loops over float64 NumPy arrays: no vectorisation, no shared helper with the
package, so that an error in the tensor code cannot be mirrored here.
"""

from __future__ import annotations

import math

import numpy as np


def sq(a, b) -> float:
    return float(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True)))


def normalize(z):
    z = np.asarray(z, dtype=np.float64)
    return np.array([row / math.sqrt(sum(float(v) ** 2 for v in row)) for row in z])


def align(a, b, tau):
    if len(a) == 0:
        return 0.0
    return sum(sq(a[i], b[i]) for i in range(len(a))) / len(a) / (2 * tau)


def uniform(z, tau):
    n = len(z)
    if n < 2:
        return 0.0
    values = [math.exp(-sq(z[i], z[j]) / (2 * tau)) for i in range(n) for j in range(i + 1, n)]
    return math.log(sum(values) / len(values))


def k_jem(c, s, tau):
    n = len(c)
    total = 0.0
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += math.exp(-sq(c[i], c[j]) / (2 * tau)) * math.exp(-sq(s[i], s[j]) / (2 * tau))
        total += math.log(acc / n)
    return total / n


def sepclr(c1, c2, s1, s2, y, beta_s=1.0, beta_reg=10.0, lam=10.0, tau=0.5):
    """Returns (total, L_C, L_S, L_REG, L_JEM) exactly as method.md writes them."""
    c1, c2 = normalize(c1), normalize(c2)
    s1 = np.asarray(s1, dtype=np.float64)
    s2 = np.asarray(s2, dtype=np.float64)
    n = len(y)
    s1p = np.array([s1[i] if y[i] else np.zeros_like(s1[i]) for i in range(n)])
    s2p = np.array([s2[i] if y[i] else np.zeros_like(s2[i]) for i in range(n)])
    targets = [i for i in range(n) if y[i]]
    background = [i for i in range(n) if not y[i]]
    l_c = align(c1, c2, tau) + uniform(c1, tau) + uniform(c2, tau)
    l_s = (
        align([s1[i] for i in targets], [s2[i] for i in targets], tau) + uniform(s1p, tau) + uniform(s2p, tau)
    )
    if background:
        reg1 = sum(sq(s1[i], np.zeros_like(s1[i])) for i in background) / len(background)
        reg2 = sum(sq(s2[i], np.zeros_like(s2[i])) for i in background) / len(background)
        l_reg = 0.5 * (reg1 + reg2)
    else:
        l_reg = 0.0
    l_jem = 0.5 * (k_jem(c1, s1p, tau) + k_jem(c2, s2p, tau))
    total = l_c + beta_s * l_s + beta_reg * l_reg + lam * l_jem
    return total, l_c, l_s, l_reg, l_jem


def rbf(meta, sigma):
    n = len(meta)
    k = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            e = sum(
                (float(meta[i][m]) - float(meta[j][m])) ** 2 / (2 * sigma[m] ** 2) for m in range(len(sigma))
            )
            k[i, j] = math.exp(-e)
    return k


def y_aware(z1, z2, w, tau):
    z1, z2 = normalize(z1), normalize(z2)
    n = len(z1)
    total = 0.0
    for i in range(n):
        logits = [float(np.dot(z1[i], z2[j])) / tau for j in range(n)]
        log_norm = math.log(sum(math.exp(v) for v in logits))
        row = sum(w[i][k] for k in range(n))
        for j in range(n):
            total -= w[i][j] / row * (logits[j] - log_norm)
    return total / n


def nt_xent(z1, z2, tau):
    """SimCLR NT-Xent, one anchor at a time over the 2B embeddings."""
    z = list(normalize(np.concatenate([z1, z2])))
    n, batch = len(z), len(z1)
    total = 0.0
    for i in range(n):
        positive = (i + batch) % n
        others = [math.exp(float(np.dot(z[i], z[k])) / tau) for k in range(n) if k != i]
        total += -float(np.dot(z[i], z[positive])) / tau + math.log(sum(others))
    return total / n


def conditional_align(z1, z2, w, tau):
    n = len(z1)
    total = 0.0
    for i in range(n):
        row = sum(w[i][k] for k in range(n))
        for j in range(n):
            total += w[i][j] / row * sq(z1[i], z2[j]) / (2 * tau)
    return total / n


def conditional_uniform(z, w, tau):
    n = len(z)
    num = den = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            num += (1 - w[i][j]) * math.exp(-sq(z[i], z[j]) / (2 * tau))
            den += 1 - w[i][j]
    return math.log(num / den)


def decoupled(z1, z2, w=None, lam=0.01):
    z1, z2 = normalize(z1), normalize(z2)
    mu = (z1 + z2) / 2
    if w is not None:
        mu = np.linalg.solve(np.asarray(w) + lam * np.eye(len(mu)), np.asarray(w) @ mu)
    n = len(mu)
    values = [math.exp(-2 * sq(mu[i], mu[j])) for i in range(n) for j in range(i + 1, n)]
    return math.log(sum(values) / len(values))


def sup_align(x, a, sigma2):
    n = len(x)
    values = [
        math.exp(-((float(a[i]) - float(a[j])) ** 2) / (2 * sigma2)) * (float(x[i]) - float(x[j])) ** 2
        for i in range(n)
        for j in range(i + 1, n)
    ]
    return sum(values) / len(values)
