"""The stand-in cloud's by-id lookups give moto's own answers."""

from __future__ import annotations

from typing import Any

import moto.ec2.exceptions
import pytest

from spotfleet_sim import backend


@pytest.fixture
def ec2() -> Any:
    backend.reset_all()
    backend.install_fast_lookups()
    b = backend.ec2(backend.DEFAULT_ACCOUNT_ID, "us-east-1")
    yield b
    backend.reset_all()


def test_get_instance_finds_what_moto_finds(ec2: Any) -> None:
    image = next(iter(ec2.amis))
    ids = []
    for _ in range(4):  # several reservations, several instances each
        res = ec2.run_instances(
            image, 3, None, [], instance_type="t3.micro", is_instance_type_default=True
        )
        ids += [i.id for i in res.instances]
    for iid in ids:
        assert backend._get_instance(ec2, iid) is backend._moto_get_instance(ec2, iid)
    with pytest.raises(moto.ec2.exceptions.InvalidInstanceIdError):
        backend._get_instance(ec2, "i-0123456789abcdef0")


def test_describe_images_by_id_filter_is_motos_answer(ec2: Any) -> None:
    for image in list(ec2.amis)[:5]:
        f = {"image-id": image}
        assert backend._describe_images(ec2, filters=f) == backend._moto_describe_images(
            ec2, filters=f
        )
    missing = {"image-id": "ami-00000000"}
    assert backend._describe_images(ec2, filters=missing) == []
    assert backend._moto_describe_images(ec2, filters=missing) == []
    # a pattern or any other argument: moto answers
    pattern = {"image-id": "ami-*"}
    assert backend._describe_images(ec2, filters=pattern) == backend._moto_describe_images(
        ec2, filters=pattern
    )


def test_describe_volumes_by_one_id_is_motos_answer(ec2: Any) -> None:
    image = next(iter(ec2.amis))
    ec2.run_instances(image, 2, None, [], instance_type="t3.micro", is_instance_type_default=True)
    vols = list(ec2.volumes)
    assert vols
    for v in vols:
        assert backend._describe_volumes(ec2, [v]) == backend._moto_describe_volumes(ec2, [v])
    assert backend._describe_volumes(ec2, vols) == backend._moto_describe_volumes(ec2, vols)
    with pytest.raises(moto.ec2.exceptions.InvalidVolumeIdError):
        backend._describe_volumes(ec2, ["vol-00000000"])
