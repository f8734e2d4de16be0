// Loaded into every test process (package.json "tap"."node-arg"), before any test runs.
//
// tap records, in every node process a test starts (agents, proxies, control, CLI calls — about
// 400 per run), each module it loads, and parses the source maps of those under node_modules
// too, which it never reports coverage for: about 0.4 s of CPU per process. The exclusion below
// is tap's own (its runner sets it and cannot be told otherwise) plus node_modules; processes the
// tests spawn inherit it through the environment. Coverage of Remora's own files is unchanged.
process.env._TAPJS_PROCESSINFO_EXCLUDE_ = String(
  /(^(node|tapmock):|[\\/](\.tap|tap-snapshots|node_modules)[\\/])/,
);
