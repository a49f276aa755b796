"""The hybrid machine-learning method of paper 001 (blase3D): every spectrum of a model grid
recast as pseudo-Voigt lines (:mod:`.clone`, run over the grid by :mod:`.clone_job`), the
same line identified across the grid and its parameters interpolated over the labels
(:mod:`.build`, :mod:`.generator`), and labels inferred by Gaussian-process minimisation of
the RMS between a spectrum and the reconstruction (:mod:`stellar_ray.inference.gp`)."""
