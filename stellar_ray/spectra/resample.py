"""Flux-conserving resampling of a spectrum onto another wavelength grid.

Each pixel is a bin (edges half-way between centres); the output flux in a bin is the
overlap-weighted mean of the input flux densities it covers, so the integrated flux over
any range of whole bins is unchanged. Written here rather than taken from ``spectres``
(same algorithm) because it must also propagate the mask bits and skip unusable input
pixels, and it is vectorised as one sparse matrix so a whole file reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .schema import UNUSABLE, MaskBit


def bin_edges(centres: np.ndarray) -> np.ndarray:
    """Edges of the bins around increasing pixel centres: (L,) -> (L + 1,)."""
    c = np.asarray(centres, dtype=np.float64)
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


@dataclass(frozen=True)
class Resampler:
    """Overlap matrix from one grid to another: ``weights[j, i]`` is the fraction of output bin
    j covered by input bin i; ``covered[j]`` says whether the input spans output bin j."""

    weights: sp.csr_matrix
    covered: np.ndarray

    @classmethod
    def between(cls, wave_in: np.ndarray, wave_out: np.ndarray) -> Resampler:
        """Both arguments are increasing pixel centres (Å), shapes (N,) and (M,)."""
        e_in, e_out = bin_edges(wave_in), bin_edges(wave_out)
        # For each output bin, the input bins that can overlap it.
        first = np.clip(np.searchsorted(e_in, e_out[:-1], side="right") - 1, 0, len(wave_in) - 1)
        last = np.clip(np.searchsorted(e_in, e_out[1:], side="left") - 1, 0, len(wave_in) - 1)
        counts = last - first + 1
        rows = np.repeat(np.arange(len(wave_out)), counts)
        cols = np.repeat(first, counts) + (np.arange(counts.sum()) -
                                           np.repeat(np.cumsum(counts) - counts, counts))
        lo = np.maximum(e_in[cols], e_out[rows])
        hi = np.minimum(e_in[cols + 1], e_out[rows + 1])
        width = e_out[1:] - e_out[:-1]
        frac = np.clip(hi - lo, 0.0, None) / width[rows]
        keep = frac > 0
        weights = sp.csr_matrix((frac[keep], (rows[keep], cols[keep])),
                                shape=(len(wave_out), len(wave_in)))
        eps = 1e-9 * width
        covered = (e_out[:-1] >= e_in[0] - eps) & (e_out[1:] <= e_in[-1] + eps)
        return cls(weights=weights, covered=covered)

    def apply(self, flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Resample one spectrum: (N,) arrays -> (M,) flux, sigma, mask.

        Unusable input pixels get no weight; an output pixel that drew on some of them is
        flagged INTERPOLATED (and carries their other bits); one with no usable input, or
        outside the input range, is NO_DATA with flux 0 and sigma +inf.
        """
        good = (mask & np.uint8(UNUSABLE)) == 0
        f = np.where(good, flux, 0.0).astype(np.float64)
        var = np.where(good, np.asarray(sigma, np.float64) ** 2, 0.0)
        w_good = self.weights @ good.astype(np.float64)
        w_all = np.asarray(self.weights.sum(axis=1)).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            out_flux = (self.weights @ f) / w_good
            out_sigma = np.sqrt(self.weights.multiply(self.weights) @ var) / w_good
        # OR of the mask bits of every contributing input pixel.
        out_mask = np.zeros(self.weights.shape[0], dtype=np.uint8)
        for bit in MaskBit:
            hit = self.weights @ ((mask & np.uint8(bit)) != 0).astype(np.float64)
            out_mask[hit > 0] |= np.uint8(bit)
        usable = self.covered & (w_good > 0)
        partial = usable & (w_good < w_all - 1e-12)
        out_mask[usable] &= np.uint8(~UNUSABLE & 0xFF)
        out_mask[partial] |= np.uint8(MaskBit.INTERPOLATED)
        out_mask[~usable] |= np.uint8(MaskBit.NO_DATA)
        out_flux[~usable] = 0.0
        out_sigma[~usable] = np.inf
        return out_flux.astype(np.float32), out_sigma.astype(np.float32), out_mask
