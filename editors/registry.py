"""The editors' registry: built-in editors plus the ``pie_bench.editors`` entry-point group.

Built on the one lazy registry (``pie_bench.core.registry``): an editor whose optional dependency is
missing is listed as unavailable with the reason and never breaks ``--editors all``. A third-party
package adds an editor with no core change::

    [project.entry-points."pie_bench.editors"]
    my_editor = "my_pkg.editor:MyEditor"
"""
from __future__ import annotations

from typing import Optional

from pie_bench.core.registry import Entry, Registry, subclass_check

ENTRY_POINT_GROUP = "pie_bench.editors"

BUILTIN_EDITORS: dict[str, str] = {
    "identity": "editors.identity:IdentityEditor",
    "oracle": "editors.oracle:OracleEditor",
    "blank": "editors.blank:BlankEditor",
    "ddim_p2p": "editors.ddim_p2p:DDIMP2PEditor",
    "nti_p2p": "editors.nti_p2p:NullTextP2PEditor",
    "npi_p2p": "editors.npi_p2p:NegativePromptP2PEditor",
    "ip2p": "editors.ip2p:InstructPix2PixEditor",
    "qwen_image_edit": "editors.qwen_image_edit:QwenImageEditEditor",
    "flux_kontext": "editors.flux_kontext:FluxKontextEditor",
    "pix2pix_zero": "editors.pix2pix_zero:Pix2PixZeroEditor",
    "icd": "editors.icd:ICDEditor",
    "direct_inversion_p2p": "editors.direct_inversion_p2p:DirectInversionP2PEditor",
    "masactrl": "editors.masactrl:MasaCtrlEditor",
    "direct_inversion_masactrl": "editors.masactrl:DirectInversionMasaCtrlEditor",
    "pnp": "editors.pnp:PnPEditor",
    "direct_inversion_pnp": "editors.pnp:DirectInversionPnPEditor",
    "ledits_pp": "editors.ledits_pp:LEditsPPEditor",
    "flowedit": "editors.flowedit:FlowEditEditor",
    "rf_inversion": "editors.rf_inversion:RFInversionEditor",
    "rf_solver_edit": "editors.rf_solver_edit:RFSolverEditEditor",
    "fireflow": "editors.fireflow:FireFlowEditor",
}

EDITORS = Registry("editor", ENTRY_POINT_GROUP, BUILTIN_EDITORS, subclass_check("editors.base:Editor"))


def registry(refresh: bool = False) -> dict[str, Entry]:
    return EDITORS.entries(refresh)


def get_entry(name: str) -> Entry:
    return EDITORS.entry(name)


def get_editor_class(name: str) -> type:
    return EDITORS.get(name)


def resolve_editor_names(spec: str, backbone: Optional[str] = None) -> tuple[list[str], dict[str, str]]:
    """``all`` -> every available editor (unavailable ones returned with their reason, including those
    that declare they cannot run on ``backbone``, e.g. iCD on ShapesEdit); otherwise a comma list, each
    name checked (an explicitly named editor is run, and fails to load if it must)."""
    if spec.strip() == "all":
        importable, unavailable = EDITORS.split_available()
        names = []
        for name in importable:
            why = EDITORS.get(name).backbone_unavailable(backbone) if backbone is not None else None
            if why:
                unavailable[name] = why
            else:
                names.append(name)
        return names, unavailable
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for n in names:
        get_entry(n).resolve()
    return names, {}
