"""The acoustic model as a pure nn.Module: shapes, masks, speaker conditioning."""
import torch

from lightning_tts.models.acoustic import AcousticModel, ConditionalLayerNorm, ModelConfig


def _model(**kw) -> AcousticModel:
    torch.manual_seed(0)
    config = ModelConfig(dim=32, heads=2, ffn_dim=64, speaker_dim=8, predictor_channels=16, aligner_channels=16)
    return AcousticModel(config, n_symbols=30, n_mels=16, **kw).eval()


def test_teacher_forced_and_free_running_shapes() -> None:
    model = _model(pitch=True, energy=True)
    tokens = torch.randint(1, 30, (2, 7))
    tl, ml = torch.tensor([7, 5]), torch.tensor([20, 13])
    mels = torch.randn(2, 20, 16)
    out = model(tokens, tl, torch.randn(2, 8), mels=mels, mel_lengths=ml, pitch=torch.rand(2, 20) * 200,
                energy=torch.rand(2, 20))
    assert out.mel.shape == (2, 20, 16) and out.mel_lengths.tolist() == [20, 13]
    assert out.attn_soft.shape == (2, 20, 7) and out.durations.sum(1).tolist() == [20, 13]
    assert out.mel[1, 13:].abs().sum() == 0  # padding stays zero
    assert out.pitch_target.shape == (2, 7)
    free = model(tokens[:1], tl[:1], torch.randn(1, 8), pace=1.0)
    assert free.mel.shape[0] == 1 and free.mel.shape[1] == int(free.mel_lengths[0]) >= 1


def test_speaker_changes_output_and_named_speaker_parameters() -> None:
    model = _model()
    for p in model.parameters():  # make the conditional norms non-trivial
        torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
    tokens, tl = torch.randint(1, 30, (1, 6)), torch.tensor([6])
    mels, ml = torch.randn(1, 15, 16), torch.tensor([15])
    a = model(tokens, tl, torch.zeros(1, 8), mels=mels, mel_lengths=ml).mel
    b = model(tokens, tl, torch.ones(1, 8), mels=mels, mel_lengths=ml).mel
    assert (a - b).abs().mean() > 1e-3
    names = model.speaker_parameter_names()
    assert "speaker_proj.weight" in names and any(".scale." in n for n in names)
    assert not any(n.startswith(("encoder.", "aligner.", "embedding")) for n in names)


def test_conditional_layer_norm_starts_as_layer_norm() -> None:
    cln = ConditionalLayerNorm(6, 3)
    x = torch.randn(2, 4, 6)
    assert torch.allclose(cln(x, torch.randn(2, 3)), torch.nn.functional.layer_norm(x, (6,)), atol=1e-6)
