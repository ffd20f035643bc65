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

/** `scheme://` then the userinfo, up to the authority's last `@` (as URL parsers read it). */
const USERINFO = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)@/i;

const decoded = (text: string): string => {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
};

/**
 * The credentials an endpoint URL carries (`http://user:pass@host`): the userinfo and the password,
 * as written and percent-decoded. They are secrets like the secret key.
 */
export function endpointCredentials(endpoint: string | undefined): string[] {
  const userinfo = endpoint === undefined ? undefined : USERINFO.exec(endpoint)?.[2];
  if (!userinfo) return [];
  const colon = userinfo.indexOf(":");
  const password = colon < 0 ? "" : userinfo.slice(colon + 1);
  return [...new Set([userinfo, password, decoded(userinfo), decoded(password)])].filter((value) => value !== "");
}

/** The endpoint with its userinfo replaced by `***`, for showing it. */
export function redactEndpoint(endpoint: string): string {
  return endpoint.replace(USERINFO, "$1***@");
}
