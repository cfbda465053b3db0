"""UpscaleOptions: the one type of a request's parameters, its wire form both ways, and the job record's."""

from __future__ import annotations

import dataclasses

import pytest

from hndsr_client.client import form_fields
from hndsr_model.options import UpscaleOptions
from hndsr_service.errors import ServiceError
from hndsr_service.jobs.worker import record_options, record_params
from hndsr_service.schemas import JobParams, UpscaleFields, form_value

EXAMPLES = [
    UpscaleOptions(),
    UpscaleOptions(2, ddim_steps=3, seed=7, bands=(4, 3, 2), model="real", consistency=False),
    UpscaleOptions(8, ddim_steps=1, seed=0, bands=(1,), uncertainty=True, uncertainty_samples=2),
]


@pytest.mark.parametrize("field, value", [("scale", 9), ("scale", 1), ("scale", True), ("ddim_steps", 51),
                                          ("seed", -1), ("seed", 2**32), ("uncertainty_samples", 1),
                                          ("model", "esrgan"), ("bands", (0, 1)), ("bands", ())])
def test_options_out_of_range_name_their_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        UpscaleOptions(**{field: value})


def test_a_seed_is_chosen_only_for_diffusion_without_one() -> None:
    assert UpscaleOptions(ddim_steps=0).seeded().seed is None
    assert UpscaleOptions(ddim_steps=2, seed=5).seeded().seed == 5
    chosen = {UpscaleOptions(ddim_steps=2).seeded().seed for _ in range(5)}
    assert None not in chosen and len(chosen) > 1


@pytest.mark.parametrize("options", EXAMPLES, ids=["defaults", "bands-real", "map"])
def test_the_clients_form_fields_make_the_same_options_on_the_server(options: UpscaleOptions) -> None:
    sent = {name: form_value(text) for name, text in form_fields(options).items()}  # as /jobs reads a form
    assert JobParams.model_validate(sent).options() == options


@pytest.mark.parametrize("options", EXAMPLES, ids=["defaults", "bands-real", "map"])
def test_a_job_record_keeps_the_options_and_their_seed(options: UpscaleOptions) -> None:
    fields = JobParams.model_validate({name: form_value(text) for name, text in form_fields(options).items()})
    seeded = dataclasses.replace(options, seed=options.seed if options.seed is not None else 12345)
    assert record_options(record_params(fields, seeded)) == seeded


def test_a_record_queued_before_the_model_map_and_projection_fields_existed_still_reads() -> None:
    old = {"scale_factor": 2, "ddim_steps": 1, "seed": 3, "bands": [3, 2, 1], "output_format": "tiff",
           "band_stats": {"1": [0, 1, None]}, "made_by": {"model_version": "2.1.0"}}
    # Made without the projection so far (its checkpointed rows too): the rest is made the same way.
    assert record_options(old) == UpscaleOptions(2, ddim_steps=1, seed=3, bands=(3, 2, 1), consistency=False)


def test_every_option_has_one_field_on_the_wire() -> None:
    assert len(UpscaleFields.model_fields) == len(dataclasses.fields(UpscaleOptions))


def test_bands_that_do_not_parse_are_the_clients_422() -> None:
    with pytest.raises(ServiceError) as refused:
        UpscaleFields(bands="3,3").options()
    assert refused.value.status == 422 and "twice" in refused.value.detail


def test_bands_given_as_text_or_a_list_are_the_same_options() -> None:
    assert UpscaleOptions(bands="4,3,2") == UpscaleOptions(bands=[4, 3, 2]) == UpscaleOptions(bands=(4, 3, 2))
    with pytest.raises(ValueError, match="bands"):
        UpscaleOptions(bands=("4", "3"))


def test_a_client_gives_options_or_their_fields_not_both(tmp_path) -> None:
    from hndsr_client.client import JobsClient

    with JobsClient("http://127.0.0.1:9") as client, pytest.raises(TypeError, match="not both"):
        client.submit(tmp_path / "scene.tif", UpscaleOptions(), scale=2)


def test_fields_at_their_default_are_not_sent() -> None:
    assert form_fields(UpscaleOptions(2)) == {"scale_factor": "2"}  # a server older than an option takes it
