"""Bad input to localize (issue 11): a dataset that is not facts is a TypeError for every method."""

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("method", ["activation_patching", "attribution_patching", "path_patching", "causal_tracing",
                                    "probing", "flu"])
@pytest.mark.parametrize("bad", ["counterfact.json", 3, [{"subject": "A"}]])
def test_localize_wrong_dataset_type_raises_type_error(method, bad):
    import factlens
    from factlens.testing import tiny_model

    with pytest.raises(TypeError, match="FactRecord|must be facts"):
        factlens.localize(tiny_model(), bad, method=method, show_progress=False)
