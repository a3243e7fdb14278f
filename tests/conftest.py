import os

import pytest

_EXIT_STATUS = pytest.StashKey[int]()

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from ray import serve

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    serve.shutdown()  # judge pools are Serve apps; their handles stop reporting with it
    ray.shutdown()


@pytest.fixture(scope="session")
def model_path() -> str:
    """The embedded model: built once, cached under $RAYLIGN_CACHE for later runs."""
    from raylign.embedded.model import ensure_embedded_model

    return str(ensure_embedded_model())


@pytest.fixture(scope="session")
def perturbed_model(model_path):
    """A factory: the embedded model with every matrix nudged by `scale` x its std (seeded),
    a policy that differs from the starting one without being trained."""
    import torch
    from transformers import AutoModelForCausalLM

    def make(scale: float, seed: int):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(model_path)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.add_(scale * p.std() * torch.randn_like(p))
        return model

    return make


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Exit with the suite's result once it is reported, without tearing the interpreter down:
    Ray, gRPC, vLLM and the AWS SDK leave native threads behind, and one of them waking during
    finalization can crash the process after every test passed (seen once in CI: exit 139 after
    "375 passed"). Nothing is left to run or report by now."""
    if _EXIT_STATUS in config.stash:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash[_EXIT_STATUS])
