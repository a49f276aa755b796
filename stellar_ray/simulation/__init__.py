"""The built-in generator of 4MOST-style stellar spectra.

A fast, differentiable, semi-analytic LTE line-formation model (Planck continuum, H⁻ and
hydrogen continuous opacity, Saha–Boltzmann line strengths, Milne–Eddington saturation,
pseudo-Voigt profiles, simple molecular bands) followed by the instrument (line-spread
function, rotation, Doppler shift, pixel sampling, noise). It exists so that stellar-ray
runs, is tested and is demonstrated without outside data, and so that the information
ceiling of a measurement can be computed exactly. It is not a radiative-transfer code:
there is one representative layer per star, no model atmosphere, no NLTE, and line data
outside the strong lines are a seeded random forest.
"""
