"""Draw docs/figures/conventions.png: the pixel, pad/crop and shape conventions of the project.

    python docs/figures/make_conventions.py

Needs matplotlib and numpy only (no project imports). The three panels show

(a) a 6 x 6 stamp as numpy holds it, ``image[y, x]``, displayed with ``origin="lower"``: pixel
    centres at integer coordinates, pixel edges at half-integers, the true centre of an even
    stamp at ((size - 1) / 2, (size - 1) / 2) and the pixel ``size // 2`` just above and right of it;
(b) the pad/crop rule of ``simulate/stamps.py`` on a small example: a 5 x 5 (odd) stamp padded
    into an 8 x 8 one, so that its pixel ``5 // 2 = 2`` lands on pixel ``8 // 2 = 4``;
(c) the shape labels: the half-light ellipse with semi-major axis ``re``, semi-minor axis
    ``q * re``, position angle ``pa`` counter-clockwise from the +x axis, and the circle of
    radius ``re * sqrt(q)`` (same area) that GalSim's circular ``half_light_radius`` is given.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Arc, Circle, Ellipse, FancyArrowPatch, Rectangle  # noqa: E402

OUT = Path(__file__).with_name("conventions.png")


def pixel_grid(ax, size: int, colour="0.85") -> None:
    """Pixel edges at half-integers and pixel centres (dots) at integers, 0-based."""
    for k in range(size + 1):
        ax.axhline(k - 0.5, color=colour, lw=0.8, zorder=1)
        ax.axvline(k - 0.5, color=colour, lw=0.8, zorder=1)
    yy, xx = np.mgrid[0:size, 0:size]
    ax.plot(xx.ravel(), yy.ravel(), ".", color="0.45", ms=3, zorder=2)
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(-0.5, size - 0.5)
    ax.set_xticks(range(size))
    ax.set_yticks(range(size))
    ax.set_aspect("equal")


def panel_pixels(ax) -> None:
    size = 6
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2
    image = np.exp(-((xx - c - 0.3) ** 2 + (yy - c + 0.2) ** 2) / 4.0)
    ax.imshow(image, origin="lower", cmap="Blues", vmin=0, vmax=1.6, zorder=0)
    pixel_grid(ax, size, colour="0.6")
    # one pixel, highlighted: image[1, 4]
    ax.add_patch(Rectangle((3.5, 0.5), 1, 1, fill=False, ec="tab:red", lw=2, zorder=3))
    ax.annotate(
        "image[1, 4]\n(y = 1, x = 4)",
        xy=(4, 1),
        xytext=(4.1, 2.05),
        color="tab:red",
        fontsize=8,
        ha="center",
        arrowprops={"arrowstyle": "->", "color": "tab:red"},
        zorder=4,
    )
    ax.plot([c], [c], "x", color="k", ms=9, mew=2, zorder=4)
    ax.annotate(
        "true centre\n((size-1)/2, (size-1)/2)\n= (2.5, 2.5)",
        xy=(c, c),
        xytext=(0.7, 4.35),
        fontsize=8,
        ha="center",
        arrowprops={"arrowstyle": "->"},
        zorder=4,
    )
    ax.plot([size // 2], [size // 2], "o", mfc="none", mec="tab:orange", ms=11, mew=2, zorder=4)
    ax.annotate(
        "pixel size // 2 = (3, 3)",
        xy=(3, 3),
        xytext=(3.6, 5.1),
        color="tab:orange",
        fontsize=8,
        ha="center",
        arrowprops={"arrowstyle": "->", "color": "tab:orange"},
        zorder=4,
    )
    ax.set_xlabel("x = column index (pixel)")
    ax.set_ylabel("y = row index (pixel)")
    ax.set_title("(a) image[y, x], origin='lower'\npixel centres at integers", fontsize=10)


def panel_pad(ax) -> None:
    out, small = 8, 5
    pixel_grid(ax, out)
    start = out // 2 - small // 2  # simulate.stamps.placement for in_size < out_size
    ax.add_patch(
        Rectangle(
            (start - 0.5, start - 0.5),
            small,
            small,
            fc="tab:blue",
            alpha=0.25,
            ec="tab:blue",
            lw=1.5,
            zorder=0,
        )
    )
    ax.text(
        out - 0.55,
        0.0,
        "padding: background\nnoise of the same rms",
        fontsize=7.5,
        ha="right",
        va="center",
        color="0.3",
        bbox={"fc": "white", "ec": "none", "pad": 1.5},
        zorder=3,
    )
    ax.text(
        start - 0.35, start + small - 0.7, "5 x 5 stamp", fontsize=7.5, color="tab:blue", zorder=3
    )
    ax.plot([out // 2], [out // 2], "o", mfc="none", mec="tab:orange", ms=11, mew=2, zorder=4)
    ax.annotate(
        "its pixel 5 // 2 = 2\nlands on 8 // 2 = 4",
        xy=(out // 2, out // 2),
        xytext=(5.6, 6.95),
        color="tab:orange",
        fontsize=8,
        ha="center",
        bbox={"fc": "white", "ec": "none", "pad": 1.5},
        arrowprops={"arrowstyle": "->", "color": "tab:orange"},
        zorder=4,
    )
    c = (out - 1) / 2
    ax.plot([c], [c], "x", color="k", ms=9, mew=2, zorder=4)
    ax.annotate(
        "true centre of the\n8 x 8 stamp (3.5, 3.5)",
        xy=(c, c),
        xytext=(1.6, 0.3),
        fontsize=8,
        ha="center",
        arrowprops={"arrowstyle": "->"},
        zorder=4,
    )
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    ax.set_title("(b) pad/crop rule: pixel size // 2\nlands on pixel out_size // 2", fontsize=10)


def panel_shape(ax) -> None:
    re, q, pa = 1.0, 0.45, 30.0
    t = np.radians(pa)
    ax.axhline(0, color="0.8", lw=0.8)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.add_patch(
        Ellipse(
            (0, 0), 2 * re, 2 * q * re, angle=pa, fc="tab:blue", alpha=0.18, ec="tab:blue", lw=2
        )
    )
    ax.add_patch(Circle((0, 0), re * np.sqrt(q), fill=False, ec="0.35", lw=1.2, ls="--"))
    # semi-major axis re and semi-minor axis q * re
    major = np.array([np.cos(t), np.sin(t)])
    minor = np.array([-np.sin(t), np.cos(t)])
    ax.plot(
        [-1.25 * major[0], 1.25 * major[0]], [-1.25 * major[1], 1.25 * major[1]], ":", c="tab:blue"
    )
    ax.add_patch(
        FancyArrowPatch(
            (0, 0), tuple(re * major), arrowstyle="->", mutation_scale=12, lw=2, color="k"
        )
    )
    ax.text(
        *(0.55 * re * major + 0.09 * minor),
        "re",
        fontsize=11,
        ha="center",
        va="center",
        rotation=pa,
        fontweight="bold",
    )
    ax.add_patch(
        FancyArrowPatch(
            (0, 0),
            tuple(q * re * minor),
            arrowstyle="->",
            mutation_scale=12,
            lw=2,
            color="tab:green",
        )
    )
    ax.text(
        *(0.5 * q * re * minor - 0.13 * major),
        "q re",
        fontsize=10,
        ha="center",
        va="center",
        color="tab:green",
        rotation=pa,
    )
    # position angle, counter-clockwise from +x
    ax.add_patch(Arc((0, 0), 0.8, 0.8, theta1=0, theta2=pa, color="tab:red", lw=2))
    ax.annotate(
        "",
        xy=(0.4 * np.cos(t), 0.4 * np.sin(t)),
        xytext=(0.4 * np.cos(t - 0.12), 0.4 * np.sin(t - 0.12)),
        arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 2},
    )
    ax.text(0.5, 0.11, "pa", color="tab:red", fontsize=11, fontweight="bold")
    ax.annotate(
        "+x",
        xy=(1.3, 0),
        xytext=(1.05, 0),
        fontsize=9,
        va="center",
        arrowprops={"arrowstyle": "->", "color": "0.4"},
    )
    ax.annotate("", xy=(0, 1.3), xytext=(0, 1.05), arrowprops={"arrowstyle": "->", "color": "0.4"})
    ax.text(0.06, 1.2, "+y", fontsize=9, va="center")
    ax.text(
        -1.32,
        -1.05,
        "dashed: circle of radius re * sqrt(q)\n(same area; GalSim's circular\n"
        "half_light_radius before shear(q))",
        fontsize=7.5,
        color="0.3",
        va="center",
    )
    ax.text(
        -1.32,
        1.2,
        "ellipse: half the light inside\nq = b / a, pa in deg",
        fontsize=7.5,
        color="tab:blue",
        va="center",
    )
    ax.set_xlim(-1.4, 1.4)
    ax.set_ylim(-1.4, 1.4)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("(c) re along the semi-major axis,\npa counter-clockwise from +x", fontsize=10)


def main() -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 5.2))
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.11, top=0.87, wspace=0.22)
    panel_pixels(axes[0])
    panel_pad(axes[1])
    panel_shape(axes[2])
    fig.savefig(OUT, dpi=110, bbox_inches="tight", pad_inches=0.15)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
