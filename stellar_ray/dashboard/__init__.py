"""The browser dashboard (``stellar-ray dashboard``): an emulator explorer, a catalog
explorer that traces any star back to its spectrum, and training curves and sweep tables.
Built with Dash (Plotly): see :mod:`.app`."""
