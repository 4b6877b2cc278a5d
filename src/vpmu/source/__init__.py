"""Real kernel source: anchors from model steps to C statements, drift checks, designs derived from a tree.

- :mod:`vpmu.source.anchors`: the table (data) of where each modelled function lives and
  which statement each step stands for;
- :mod:`vpmu.source.cparse`: C functions read with tree-sitter, flattened into statements;
- :mod:`vpmu.source.match`: a tree against a design (``vpmu source check``);
- :mod:`vpmu.source.derive`: the design a tree implements (``vpmu source design``, ``--kernel``);
- :mod:`vpmu.source.gen`: kernel-like C from the anchors (``vpmu diff A B --c``, test trees).
"""
