"""Smooth fields over the mesh: fill free vertices from fixed ones, or blur a per-vertex value.

A displacement given only on key vertices (lips, chin, outline) and spread over the rest by solving
Laplace's equation on the mesh graph changes gradually from vertex to vertex, so neighbouring
triangles never fold over each other the way hand-made per-vertex weights can at tight spots such as
the mouth corners.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from avatar.types import FloatArray, IntArray


def adjacency(triangles: IntArray, n_vertices: int, positions: FloatArray) -> sp.csr_matrix:
    """Symmetric edge weights, inverse edge length: near neighbours pull harder."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    length = np.linalg.norm(positions[edges[:, 0]] - positions[edges[:, 1]], axis=1)
    weight = 1.0 / np.maximum(length, 0.5)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    data = np.concatenate([weight, weight])
    return sp.csr_matrix((data, (rows, cols)), shape=(n_vertices, n_vertices))


def harmonic_fill(weights: sp.csr_matrix, values: FloatArray, fixed: npt.NDArray[np.bool_]) -> FloatArray:
    """``values`` kept where ``fixed``; every other vertex the weighted mean of its neighbours.

    ``values`` is (V, k); vertices not connected to any fixed vertex get zero.
    """
    free = np.flatnonzero(~fixed)
    known = np.flatnonzero(fixed)
    out = values.astype(np.float64).copy()
    if len(free) == 0:
        return out.astype(np.float32)
    degree = np.asarray(weights.sum(axis=1)).ravel()
    laplacian = (sp.diags(degree) - weights).tocsr()
    lff = laplacian[free][:, free].tocsc()
    lfc = laplacian[free][:, known]
    # Isolated free vertices would make the system singular; a tiny diagonal term pins them to 0.
    lff = lff + sp.identity(len(free), format="csc") * 1e-9
    out[free] = splu(lff).solve(np.asarray(-(lfc @ out[known])))
    return out.astype(np.float32)


def blur(weights: sp.csr_matrix, values: FloatArray, iterations: int, keep: float = 0.5) -> FloatArray:
    """Repeated neighbour averaging; ``keep`` is the share of its own value a vertex retains."""
    degree = np.asarray(weights.sum(axis=1)).ravel()
    norm = sp.diags(1.0 / np.maximum(degree, 1e-12)) @ weights
    out = values.astype(np.float64)
    for _ in range(iterations):
        out = keep * out + (1 - keep) * (norm @ out)
    return out.astype(np.float32)
