/** The git facts s3dock needs, and their implementation over simple-git. */
import { simpleGit, type SimpleGit } from "simple-git";
import { OperationError, UsageError } from "../errors.js";

export interface CommitInfo {
  readonly hash: string;
  readonly committerTime: Date;
}

export interface GitRepo {
  readonly root: string;
  /** Tracked files with modified or staged changes (untracked files do not count). */
  changedTrackedFiles(): Promise<string[]>;
  headCommit(): Promise<CommitInfo>;
}

export class SimpleGitRepo implements GitRepo {
  private constructor(
    readonly root: string,
    private readonly git: SimpleGit,
  ) {}

  /** Opens the repository that contains `directory` (any subdirectory works). */
  static async open(directory: string): Promise<SimpleGitRepo> {
    let root: string;
    try {
      root = (await simpleGit({ baseDir: directory }).revparse(["--show-toplevel"])).trim();
    } catch (error) {
      throw new UsageError(`${directory} is not inside a git repository: s3dock build tags images from the commit (${(error as Error).message.split("\n")[0]})`);
    }
    return new SimpleGitRepo(root, simpleGit({ baseDir: root }));
  }

  async changedTrackedFiles(): Promise<string[]> {
    const status = await this.git.status(["--untracked-files=no"]);
    return status.files.map((file) => file.path).sort();
  }

  async headCommit(): Promise<CommitInfo> {
    let output: string;
    try {
      output = await this.git.raw(["log", "-1", "--format=%H %ct"]);
    } catch (error) {
      throw new OperationError(`cannot read the HEAD commit in ${this.root} (does it have a commit yet?): ${(error as Error).message.split("\n")[0]}`);
    }
    const [hash, seconds] = output.trim().split(" ");
    if (!hash || !seconds) throw new OperationError(`the repository in ${this.root} has no commit yet: commit, then build`);
    return { hash, committerTime: new Date(Number(seconds) * 1000) };
  }
}
