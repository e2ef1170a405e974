"""LayerSeg's Slicer logic, importable without Qt: parameters, the subprocess runner, MRML
helpers, dependency checks and the Logic itself."""
