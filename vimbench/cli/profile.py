"""Commands of this module are being written."""


def register(app) -> None:
    pass
