// The shop's own (made-up) data. Permissions decide what a user may do with it;
// every scope is under the organization `org/acme`.

export const ORG = 'org/acme'

export interface Project {
  id: string
  name: string
  summary: string
  documents: string[]
}

export const PROJECTS: Project[] = [
  { id: '7', name: 'Website relaunch', summary: 'New shop front, checkout and help pages.', documents: ['Launch plan', 'Copy deck', 'QA checklist'] },
  { id: '9', name: 'Mobile app', summary: 'The companion app for iOS and Android.', documents: ['Roadmap', 'Release notes'] },
]

export const projectScope = (id: string) => `${ORG}/project/${id}`

export const findProject = (id: string) => PROJECTS.find((p) => p.id == id)

export interface Invoice {
  id: string
  project: string
  customer: string
  amount: string
}

export const INVOICES: Invoice[] = [
  { id: 'INV-1041', project: '7', customer: 'Globex', amount: '1 200.00' },
  { id: 'INV-1042', project: '9', customer: 'Initech', amount: '860.00' },
  { id: 'INV-1043', project: '7', customer: 'Umbrella', amount: '2 310.00' },
]

export interface Draft {
  customer: string
  amount: string
  note: string
}

const draftKey = (user: string, project: string) => `shop.draft.${user}.${project}`

export function loadDraft(user: string, project: string): Draft | null {
  try {
    const raw = localStorage.getItem(draftKey(user, project))
    return raw ? (JSON.parse(raw) as Draft) : null
  } catch {
    return null
  }
}

export function saveDraft(user: string, project: string, draft: Draft | null) {
  if (draft && (draft.customer || draft.amount || draft.note)) localStorage.setItem(draftKey(user, project), JSON.stringify(draft))
  else localStorage.removeItem(draftKey(user, project))
}
