import pytest
import torch

# One intra-op thread per test process: pytest-xdist already runs one worker per core, and
# two threads per worker on a 2-core machine only spin against each other.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def digits_small():
    """A 600-sample slice of scikit-learn's digits as (train, test) tensor pairs."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0 - 0.3
    y = torch.tensor(y)
    return (x[:450], y[:450]), (x[450:600], y[450:600])
