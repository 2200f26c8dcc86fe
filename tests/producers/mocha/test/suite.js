// A recipe's suite in mocha, one top-level describe per tier (docs/sweep.md, "Greenness"), run
// by agent/tests/suite/producers.rs through the real sweep. FAIL names the tiers that fail.
const assert = require("assert");
const failing = (tier) => (process.env.FAIL || "").split(",").includes(tier);

describe("install", () => {
  it("answers", () => assert.ok(!failing("install")));
});

describe("backup", () => {
  it("writes the archive", () => assert.ok(true));
  it("keeps posts on restore", () => assert.ok(!failing("backup"), "posts lost after restore"));
  it.skip("copies offsite", () => assert.fail("never run"));
  describe("nightly", () => {
    it("runs at night", () => assert.ok(!failing("nightly"), "the nightly job did not run"));
  });
});

// Set-up that fails: mocha reports the hook as a failed test of its tier.
describe("upgrade", () => {
  before(() => assert.ok(!failing("upgrade"), "the last release would not deploy"));
  it("keeps the data", () => assert.ok(true));
});

describe("functional", () => {
  it("logs in", () => assert.ok(!failing("functional")));
});
