"""The Vim mixer's inner part behind one autograd boundary: in_proj -> conv1d + SiLU -> x_proj -> dt_proj -> scan.

`reference.py` composes the reference ops (plain autograd: the spec); `op.py` is the training op of backend triton,
whose forward saves the in_proj input, the weights, x_dbl and the scan's state checkpoints, and whose backward
recomputes the rest."""
