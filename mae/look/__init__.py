"""Look at what a trained model learned: the class token's attention (`mae attention`), the encoder's
features (`mae features`) and a weighted k-NN accuracy on them (`mae knn`), after DINO (Caron et al., 2021).

- `encoder_file`: the encoder a checkpoint holds (pre-training, full or encoder-only; or fine-tuned), and
  the statistics its images are normalised with;
- `attention_map`: the class token's attention in the last block, per head;
- `attention_figure`: the image with one heat map per head over it;
- `features`: class-token and mean-pooled features of a folder of images, written to a safetensors file;
- `knn`: DINO's weighted k-NN classifier on L2-normalised features;
- `commands`: the three sub-commands.
"""
