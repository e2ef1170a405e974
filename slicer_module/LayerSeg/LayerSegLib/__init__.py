"""LayerSeg's Slicer logic, importable without Qt: parameters, the subprocess runner, MRML
helpers, its own runtime (a private Python environment) and the Logic itself."""
