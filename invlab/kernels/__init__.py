"""Triton kernels, each matched to the pure-torch reference it must equal (see DESIGN.md).

Operators import a kernel module lazily and only on CUDA (or when a test forces it under
`TRITON_INTERPRET=1`), so `import invlab` never imports triton. `radon`: the parallel-beam projector pair
of `invlab.ops.radon.Radon`.
"""
