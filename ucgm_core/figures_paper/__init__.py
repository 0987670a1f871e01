"""Data and plots of the paper's figures (issue 14), one module per kind of figure.

* ``closed_form``: figures computed exactly, without a trained model (Fig. 7: 1-D probability-flow ODE
  trajectories from the closed-form velocity; Fig. 8: the Beta densities of the time distributions).
* ``toy*``: the toy-model miniatures of the ablation figures (Fig. 2, 3, 4).

Kept empty on purpose: importing the package imports no sibling (matplotlib and scipy load only when a
figure module is imported), so the workflow scripts pay only for the figure they make.
"""

__all__: list[str] = []
