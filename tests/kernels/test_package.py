"""`kernels` is also the name of an unrelated PyPI project: make sure the one imported is ours."""


def test_kernels_package_is_vimbench():
    import kernels

    assert getattr(kernels, "IS_VIMBENCH_KERNELS", False) is True
    assert callable(kernels.selective_scan_ref)


def test_kernels_import_does_not_load_triton_ops():
    import sys

    import kernels  # noqa: F401

    # The package eagerly imports references only; Triton ops come from their submodules on demand.
    assert "kernels.selective_scan.reference" in sys.modules
    assert kernels.__all__ and all(name.endswith(("_ref", "_sequential")) for name in kernels.__all__)
