/** Progress bars on stderr, only for a person at a terminal: never with --json or into a pipe. */
import cliProgress from "cli-progress";
import { silentProgress, type ProgressReporter } from "../services/context.js";

const MiB = 1024 * 1024;

export function createProgress(enabled: boolean): ProgressReporter {
  if (!enabled) return silentProgress;
  return {
    start(label, total) {
      const bar = new cliProgress.SingleBar(
        {
          format: `${label} [{bar}] {percentage}% {done}/{all} MiB {speed} MiB/s`,
          stream: process.stderr,
          hideCursor: true,
          clearOnComplete: true,
          fps: 5,
        },
        cliProgress.Presets.shades_classic,
      );
      const started = Date.now();
      const all = total ? (total / MiB).toFixed(0) : "?";
      bar.start(total ?? 0, 0, { done: "0", all, speed: "0" });
      return {
        update(value) {
          const seconds = Math.max((Date.now() - started) / 1000, 0.001);
          if (total !== undefined && value > total) bar.setTotal(value);
          bar.update(value, { done: (value / MiB).toFixed(0), speed: (value / MiB / seconds).toFixed(1) });
        },
        stop: () => bar.stop(),
      };
    },
  };
}
