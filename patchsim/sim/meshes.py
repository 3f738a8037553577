"""Panda3D geometry built from numpy arrays, in world coordinates.

Vertices are metres in the world frame (x east, y north, z up). Triangle winding is fixed
here from the normals, so callers only say which way a surface faces.
"""

from __future__ import annotations

import math

import numpy as np
from panda3d.core import (
    Geom,
    GeomEnums,
    GeomNode,
    GeomTriangles,
    GeomVertexData,
    GeomVertexFormat,
    SamplerState,
    Texture,
)


def mesh_node(name: str, vertices: np.ndarray, normals: np.ndarray, uvs: np.ndarray, triangles: np.ndarray) -> GeomNode:
    """A GeomNode from arrays.

    Args:
        vertices: (N, 3) positions. normals: (N, 3). uvs: (N, 2). triangles: (M, 3) vertex indices;
            each is re-wound so its front side faces along its first vertex's normal.
    """
    vertices = np.asarray(vertices, np.float32)
    normals = np.asarray(normals, np.float32)
    uvs = np.asarray(uvs, np.float32)
    tris = np.asarray(triangles, np.int64).reshape(-1, 3).copy()
    a, b, c = vertices[tris[:, 0]], vertices[tris[:, 1]], vertices[tris[:, 2]]
    face_n = np.cross(b - a, c - a)
    flip = (face_n * normals[tris[:, 0]]).sum(1) < 0
    tris[flip] = tris[flip][:, [0, 2, 1]]

    vdata = GeomVertexData(name, GeomVertexFormat.get_v3n3t2(), Geom.UH_static)
    vdata.unclean_set_num_rows(len(vertices))
    interleaved = np.concatenate([vertices, normals, uvs], axis=1).astype(np.float32)
    memoryview(vdata.modify_array(0)).cast("B")[:] = interleaved.tobytes()
    prim = GeomTriangles(Geom.UH_static)
    prim.set_index_type(GeomEnums.NT_uint32)
    idx = prim.modify_vertices()
    idx.unclean_set_num_rows(tris.size)
    memoryview(idx).cast("B")[:] = tris.astype(np.uint32).tobytes()
    geom = Geom(vdata)
    geom.add_primitive(prim)
    node = GeomNode(name)
    node.add_geom(geom)
    return node


def polygon(points: np.ndarray, normal: np.ndarray, uvs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Arrays (vertices, normals, uvs, triangles) of a convex polygon as a triangle fan."""
    k = len(points)
    tris = np.array([[0, i, i + 1] for i in range(1, k - 1)])
    return np.asarray(points, float), np.tile(normal, (k, 1)), np.asarray(uvs, float), tris


def merge(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """Concatenate (vertices, normals, uvs, triangles) tuples into one."""
    vs, ns, us, ts, offset = [], [], [], [], 0
    for v, n, u, t in parts:
        vs.append(v)
        ns.append(n)
        us.append(u)
        ts.append(np.asarray(t) + offset)
        offset += len(v)
    return np.concatenate(vs), np.concatenate(ns), np.concatenate(us), np.concatenate(ts)


def box(centre: np.ndarray, size: tuple[float, float, float], yaw_rad: float, uv_m: float | None = None,
        bottom: bool = False) -> tuple[np.ndarray, ...]:
    """An oriented box: ``size`` = (length along yaw, width, height), ``centre`` at mid-height.

    ``uv_m`` tiles a texture every ``uv_m`` metres on each face; None maps the whole texture per face.
    """
    l, w, h = size
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    ax = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # rows: forward, left, up
    half = np.array([l, w, h]) / 2
    parts = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            if axis == 2 and sign < 0 and not bottom:
                continue
            n = ax[axis] * sign
            u_axis, v_axis = [i for i in range(3) if i != axis]  # side faces: (horizontal, up)
            corners = []
            for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = np.array(centre, float) + n * half[axis]
                p = p + ax[u_axis] * half[u_axis] * du + ax[v_axis] * half[v_axis] * dv
                corners.append(p)
            if uv_m:
                uv = np.array([[0, 0], [2 * half[u_axis] / uv_m, 0], [2 * half[u_axis] / uv_m, 2 * half[v_axis] / uv_m],
                               [0, 2 * half[v_axis] / uv_m]])
            else:
                uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]])
            parts.append(polygon(np.array(corners), n, uv))
    return merge(parts)


def box_corners(centre: np.ndarray, size: tuple[float, float, float], yaw_rad: float) -> np.ndarray:
    """The 8 corners (8, 3) of the box made by :func:`box`."""
    l, w, h = size
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    fwd, left = np.array([c, s, 0.0]), np.array([-s, c, 0.0])
    out = []
    for a in (-1, 1):
        for b in (-1, 1):
            for z in (-1, 1):
                out.append(np.asarray(centre, float) + fwd * l / 2 * a + left * w / 2 * b + np.array([0, 0, h / 2 * z]))
    return np.array(out)


def ground_strip(left: np.ndarray, right: np.ndarray, z: float, uv_scale_m: float | None,
                 s_along: np.ndarray | None = None, width_m: float | None = None) -> tuple[np.ndarray, ...]:
    """A horizontal strip between two polylines (N, 2) at height ``z``, facing up.

    With ``uv_scale_m`` the texture repeats every that many metres, u across and v along the strip.
    """
    n = len(left)
    verts = np.concatenate([np.c_[left, np.full(n, z)], np.c_[right, np.full(n, z)]])
    normals = np.tile([0.0, 0.0, 1.0], (2 * n, 1))
    if s_along is None:
        s_along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff((left + right) / 2, axis=0), axis=1))])
    if width_m is None:
        width_m = float(np.linalg.norm(left[0] - right[0]))
    scale = uv_scale_m or 1.0
    u = np.concatenate([np.zeros(n), np.full(n, width_m / scale if uv_scale_m else 1.0)])
    v = np.concatenate([s_along, s_along]) / (scale if uv_scale_m else max(s_along[-1], 1e-6))
    tris = []
    for i in range(n - 1):
        tris.append([i, n + i, n + i + 1])
        tris.append([i, n + i + 1, i + 1])
    return verts, normals, np.c_[u, v], np.array(tris)


def make_texture(name: str, image: np.ndarray, mipmap: bool = True, clamp: bool = False) -> Texture:
    """A Panda3D texture from an RGB or RGBA uint8 image (row 0 at the top)."""
    tex = Texture(name)
    update_texture(tex, image)
    if mipmap:
        tex.set_minfilter(SamplerState.FT_linear_mipmap_linear)
    else:
        tex.set_minfilter(SamplerState.FT_linear)
    tex.set_magfilter(SamplerState.FT_linear)
    if clamp:
        tex.set_wrap_u(SamplerState.WM_clamp)
        tex.set_wrap_v(SamplerState.WM_clamp)
    return tex


def update_texture(tex: Texture, image: np.ndarray) -> None:
    """Replace a texture's pixels (RGB or RGBA uint8, sides powers of two)."""
    h, w, c = image.shape
    if w & (w - 1) or h & (h - 1):
        raise ValueError(f"texture sides must be powers of two, got {w}x{h}")
    fmt = Texture.F_rgba if c == 4 else Texture.F_rgb
    if tex.get_x_size() != w or tex.get_y_size() != h or tex.get_format() != fmt:
        tex.setup_2d_texture(w, h, Texture.T_unsigned_byte, fmt)
    tex.set_ram_image_as(np.ascontiguousarray(image[::-1]).tobytes(), "RGBA" if c == 4 else "RGB")
