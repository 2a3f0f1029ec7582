"""Continual-learning metrics of an accuracy matrix, as an `evaluate` module.

Load it offline, from the copy shipped inside the package::

    import evaluate
    import dkvb_nlp.metrics

    cl = evaluate.load(dkvb_nlp.metrics.continual_learning_metric_path())
    cl.compute(accuracy_matrix=[[0.9, 0.1], [0.7, 0.8]], baseline=[0.1, 0.05])

The numbers are those of `dkvb_nlp.metrics` (this script only converts the inputs and calls
`summarize` and `forward_transfer`), so they equal `results.json`'s fields for the same matrix.
"""

import datasets
import evaluate

from dkvb_nlp.metrics import forward_transfer, summarize, unmeasured_rows

_DESCRIPTION = """\
Continual-learning metrics of a T x T accuracy matrix A, where A[i][j] is the test accuracy on
task j after training task i, a fraction in [0, 1]: final accuracy (mean of the last row),
average incremental accuracy (AIA: mean over i of the mean of A[i][:i+1]), backward transfer
(BWT: mean over j < T-1 of A[T-1][j] - A[j][j]), forgetting (mean over j < T-1 of
max_{j <= l < T-1} A[l][j] - A[T-1][j]) and forward transfer (FWT: mean over j >= 1 of
A[j-1][j] - b[j], b[j] the accuracy of the untrained, randomly initialised model on task j).
"""

_KWARGS_DESCRIPTION = """
Args:
    accuracy_matrix (`list` of `list` of `float`): one example per row of the matrix, in training
        order: row i holds the test accuracy on every task (0..T-1) after training task i,
        fractions in [0, 1] (not percentages). Every entry is needed, also the tasks not trained
        yet (above the diagonal). A row of None (NaN) marks a step that was not evaluated (a
        method that learns once, after the last task); the last row must be measured.
    baseline (`list` of `float`, *optional*): the accuracy of the untrained model on each task,
        one per task, needed for forward transfer.

Returns:
    final_accuracy (`float`), average_incremental_accuracy (`float` or None), bwt (`float` or
    None), forgetting (`float` or None), forward_transfer (`float` or None). AIA, BWT,
    forgetting and forward transfer are None when rows before the last are unmeasured; forward
    transfer is also None when no baseline is given (there is no default untrained accuracy).
    With a single task, BWT, forgetting and forward transfer are 0.0.

Examples:
    >>> cl = evaluate.load(dkvb_nlp.metrics.continual_learning_metric_path())
    >>> cl.compute(accuracy_matrix=[[0.9, 0.1], [0.7, 0.8]], baseline=[0.1, 0.05])
    {'final_accuracy': 0.75, 'average_incremental_accuracy': 0.825, 'bwt': -0.20000000000000007, 'forgetting': 0.20000000000000007, 'forward_transfer': 0.05}
"""

_CITATION = """\
@inproceedings{lopez2017gradient,
  title={Gradient Episodic Memory for Continual Learning},
  author={Lopez-Paz, David and Ranzato, Marc'Aurelio},
  booktitle={Advances in Neural Information Processing Systems},
  year={2017}
}
@inproceedings{chaudhry2018riemannian,
  title={Riemannian Walk for Incremental Learning: Understanding Forgetting and Intransigence},
  author={Chaudhry, Arslan and Dokania, Puneet K. and Ajanthan, Thalaiyasingam and Torr, Philip H. S.},
  booktitle={European Conference on Computer Vision},
  year={2018}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ContinualLearning(evaluate.Metric):
    """Final accuracy, AIA, BWT, forgetting and forward transfer of an accuracy matrix."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"accuracy_matrix": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, accuracy_matrix, baseline=None):
        # The rows arrive in the order they were added; None entries (unmeasured rows) become
        # NaN in summarize's check, which names any ragged, non-square or out-of-range input.
        result = summarize(accuracy_matrix)
        if baseline is None or unmeasured_rows(accuracy_matrix):
            result["forward_transfer"] = None
        else:
            result["forward_transfer"] = forward_transfer(accuracy_matrix, baseline)
        return result
