/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', {}] },
  testTimeout: 60_000,
  // A test that needs a real part fails when it is missing; nothing here skips.
  reporters: ['default', '<rootDir>/test/summary-reporter.js'],
};
