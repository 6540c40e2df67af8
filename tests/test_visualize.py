"""Sample grids: each image in its cell, white padding and empty cells (torchvision's make_grid underneath)."""

import torch

from ddpm_lab.visualize import image_grid, to_uint8


def test_grid_places_each_image_in_its_cell_with_white_padding():
    images = torch.linspace(-1, 0.5, 5)[:, None, None, None].expand(5, 1, 4, 3)  # 5 constant grey images
    grid = image_grid(images, nrow=3, padding=2)
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (3 + 2) + 2, 3)
    for i in range(5):
        r, c = divmod(i, 3)
        cell = grid[2 + r * 6 : 2 + r * 6 + 4, 2 + c * 5 : 2 + c * 5 + 3]
        assert (cell == int(to_uint8(images[i])[0, 0, 0])).all(), i
    assert (grid[:2] == 255).all() and (grid[8:, 12:] == 255).all(), "padding and the empty sixth cell are white"


def test_a_single_image_is_padded_like_a_grid():
    assert image_grid(torch.zeros(1, 3, 8, 6)).shape == (12, 10, 3)
