/** Replaces known secrets with `***` in anything s3dock prints. */
export class Redactor {
  private readonly secrets: string[] = [];

  add(secret: string | undefined): void {
    if (secret && secret.length >= 4 && !this.secrets.includes(secret)) this.secrets.push(secret);
  }

  scrub(text: string): string {
    let out = text;
    for (const secret of this.secrets) out = out.split(secret).join("***");
    return out;
  }
}
