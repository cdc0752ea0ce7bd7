"""The acoustic model as a pure nn.Module: shapes, masks, speaker conditioning."""
import torch

from lightning_tts.models.acoustic import AcousticModel, ConditionalLayerNorm, ModelConfig, PostNet
from lightning_tts.models.losses import AcousticLoss, LossConfig, masked_l1


def _model(postnet_layers: int = 0, **kw) -> AcousticModel:
    torch.manual_seed(0)
    config = ModelConfig(dim=32, heads=2, ffn_dim=64, speaker_dim=8, predictor_channels=16, aligner_channels=16,
                         postnet_layers=postnet_layers, postnet_channels=24)
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


def test_hard_durations_are_the_teacher_forced_durations_in_train_mode() -> None:
    """The aligner-only path (``hard_durations``, what adaptation aligns its support set with) gives the
    durations of a full teacher-forced pass, also with dropout active, for any speaker vector."""
    model = _model().train()
    torch.manual_seed(3)
    tokens = torch.randint(1, 30, (3, 9))
    tl, ml = torch.tensor([9, 6, 4]), torch.tensor([30, 17, 11])
    mels = torch.randn(3, 30, 16)
    with torch.no_grad():
        full = model(tokens, tl, torch.randn(3, 8), mels=mels, mel_lengths=ml).durations
        fast = model.hard_durations(tokens, tl, mels, ml)
    assert torch.equal(fast, full)
    assert fast.sum(1).tolist() == [30, 17, 11] and fast[1, 6:].abs().sum() == 0 and fast[2, 4:].abs().sum() == 0


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


def test_an_untrained_postnet_adds_nothing_and_its_loss_scores_both_mels() -> None:
    plain, with_postnet = _model(), _model(postnet_layers=3)
    assert plain.postnet is None
    added = set(with_postnet.state_dict()) - set(plain.state_dict())
    assert added and all(k.startswith("postnet.") for k in added)
    with_postnet.load_state_dict({**with_postnet.state_dict(), **plain.state_dict()})  # a warm start
    tokens, tl = torch.randint(1, 30, (2, 7)), torch.tensor([7, 5])
    mels, ml, speaker = torch.randn(2, 20, 16), torch.tensor([20, 13]), torch.randn(2, 8)
    before = plain(tokens, tl, speaker, mels=mels, mel_lengths=ml)
    after = with_postnet(tokens, tl, speaker, mels=mels, mel_lengths=ml)
    assert before.decoder_mel is None
    assert torch.equal(after.mel, after.decoder_mel) and torch.allclose(after.mel, before.mel)
    for p in with_postnet.postnet.parameters():  # a trained postnet: the loss scores both mels
        torch.nn.init.normal_(p, std=0.1)
    out = with_postnet(tokens, tl, speaker, mels=mels, mel_lengths=ml)
    terms = AcousticLoss(LossConfig(bin_start=0, bin_warmup=1))(out, mels, ml, tl, step=1)
    assert torch.allclose(terms["mel_loss"], masked_l1(out.mel, mels, ml))
    assert torch.allclose(terms["decoder_mel_loss"], masked_l1(out.decoder_mel, mels, ml))
    assert not torch.allclose(terms["mel_loss"], terms["decoder_mel_loss"])
    rest = terms["mel_loss"] + 0.1 * terms["duration_loss"] + terms["align_loss"] + terms["bin_loss"]
    assert torch.allclose(terms["loss"], rest + terms["decoder_mel_loss"])
    terms["loss"].backward()
    assert with_postnet.postnet.convs[0].weight.grad.abs().sum() > 0


def test_postnet_ignores_padding_frames() -> None:
    torch.manual_seed(0)
    postnet = PostNet(n_mels=6, channels=8, layers=3, kernel_size=5, dropout=0.0)
    for p in postnet.parameters():
        torch.nn.init.normal_(p, std=0.3)
    mel = torch.randn(1, 9, 6)
    padded = torch.cat([mel, 100 * torch.randn(1, 4, 6)], dim=1)  # garbage past the real frames
    alone = postnet(mel, torch.ones(1, 9, dtype=torch.bool))
    batched = postnet(padded, torch.arange(13)[None] < 9)
    assert torch.allclose(batched[:, :9], alone, atol=1e-5)
    assert batched[:, 9:].abs().sum() == 0
