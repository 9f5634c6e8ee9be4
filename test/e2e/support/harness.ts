// The one place the e2e suite imports the containerd harness from.
export * from '../../harness/containerd';
