;;; ob-chat-ai-setup.el --- Install the chat-ai helper and say what is wrong  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; Two commands that make the package work without reading a manual:
;;
;; `ob-chat-ai-install-helper' makes a virtualenv in the user's Emacs
;; directory (`ob-chat-ai-helper-directory') and installs the Python
;; helper into it from this package's own directory, where pyproject.toml
;; and chat_ai_helper/ travel with the Elisp.  pip's output shows in the
;; buffer *chat-ai install*.  Interactively it asks once; in batch it asks
;; nothing and waits, so that calling it from Emacs in batch, after the
;; init file, provisions a machine.  With a prefix argument, the local model's
;; dependencies come too (the [local] extra).
;;
;; `ob-chat-ai-doctor' shows, in an Org buffer, the Emacs and Org
;; versions, the helper and its Python, each provider as the helper
;; resolves it, the proxy settings, and a live check of the chosen
;; provider; each problem is followed by its fix.  The facts come from
;; the helper (`chat-ai doctor --json'); Emacs adds the keys only it can
;; find, in auth-source.

;;; Code:

;;;; Requirements

(require 'org)
(require 'ob-chat-ai)
(require 'ob-chat-ai-process)
(require 'json)
(require 'url-parse)

;;;; Customization

(defcustom ob-chat-ai-python nil
  "The Python (3.10 or newer) that makes the helper's virtualenv.
nil means python3, else python, on the variable `exec-path'."
  :type '(choice (const :tag "python3 on exec-path" nil) file)
  :group 'ob-chat-ai)

;;;; Installing the helper

(defconst ob-chat-ai--package-directory
  (file-name-directory (or load-file-name buffer-file-name default-directory))
  "The directory this package was loaded from, where its Python part lies too.")

(defconst ob-chat-ai--python-files '("pyproject.toml" "README.org" "chat_ai_helper")
  "The files of the package's directory that pip builds the helper from.")

(defconst ob-chat-ai--install-buffer "*chat-ai install*"
  "The name of the buffer that shows the installer's progress.")

;;;###autoload
(defun ob-chat-ai-install-helper (&optional local)
  "Install the chat-ai helper in a virtualenv in `ob-chat-ai-helper-directory'.
The helper is built from this package's directory; pip's progress
shows in the buffer *chat-ai install*.  With LOCAL (interactively,
a prefix argument), install the local model's dependencies as well.
Interactively, ask first and install in the background; in batch,
ask nothing and return when done, signalling an error on failure."
  (interactive "P")
  (let ((python (ob-chat-ai--usable-python))
        (venv (ob-chat-ai--helper-venv)))
    (ob-chat-ai--check-helper-files)
    (when (get-buffer-process ob-chat-ai--install-buffer)
      (ob-chat-ai--user-error "The helper is being installed already; see %s"
                              ob-chat-ai--install-buffer))
    (when (or noninteractive
              (y-or-n-p (format "Install the chat-ai helper%s in %s? "
                                (if local " and the local model" "")
                                (abbreviate-file-name venv))))
      (let ((buffer (get-buffer-create ob-chat-ai--install-buffer))
            (source (ob-chat-ai--helper-source))
            (done nil))
        (with-current-buffer buffer
          (let ((inhibit-read-only t))
            (erase-buffer))
          (special-mode))
        (unless noninteractive
          (display-buffer buffer))
        (ob-chat-ai--run-in-turn
         buffer
         (list (list python "-m" "venv" venv)
               (list (ob-chat-ai--venv-python venv) "-m" "pip" "install"
                     "--disable-pip-version-check" "--upgrade"
                     (concat source (if local "[local]" ""))))
         (lambda (ok)
           (delete-directory source t)
           (setq done (if ok 'ok 'failed))
           (ob-chat-ai--report-install ok buffer)))
        (when noninteractive
          (while (not done)
            (accept-process-output nil 0.1))
          (when (eq done 'failed)
            (signal 'ob-chat-ai-error
                    (list "installing the helper failed; pip's output is above"))))
        buffer))))

(defun ob-chat-ai--usable-python ()
  "Return a Python 3.10+ that can make virtualenvs, else signal a `user-error'."
  (let ((python (or ob-chat-ai-python
                    (executable-find "python3")
                    (executable-find "python"))))
    (unless (and python
                 (eq 0 (ignore-errors
                         (call-process python nil nil nil "-c" "\
import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))"))))
      (ob-chat-ai--user-error "The helper needs Python 3.10 or newer with venv \
\(e.g. apt install python3-venv, or python.org); %s"
                  (if python
                      (format "%s is older or lacks venv; set `ob-chat-ai-python'"
                              python)
                    "none found on `exec-path'")))
    python))

(defun ob-chat-ai--check-helper-files ()
  "Signal a `user-error' unless the package's directory has the helper's files."
  (let ((missing (seq-remove (lambda (name)
                               (file-exists-p (expand-file-name
                                               name ob-chat-ai--package-directory)))
                             ob-chat-ai--python-files)))
    (when missing
      (ob-chat-ai--user-error "The package in %s lacks %s, so the helper cannot \
be built from it; install the package with its Python part (see the README)"
                  ob-chat-ai--package-directory (string-join missing ", ")))))

(defun ob-chat-ai--helper-source ()
  "Return a fresh temporary directory holding the files pip builds the helper from.
Building from a copy leaves the package's directory as it was, even
when it is read-only."
  (let ((copy (make-temp-file "chat-ai-helper-" t)))
    (dolist (name ob-chat-ai--python-files)
      (let ((from (expand-file-name name ob-chat-ai--package-directory))
            (to (expand-file-name name copy)))
        (if (file-directory-p from)
            (copy-directory from to nil nil t)
          (copy-file from to))))
    copy))

(defun ob-chat-ai--venv-python (venv)
  "Return the Python of virtualenv VENV."
  (expand-file-name (if (eq system-type 'windows-nt) "Scripts/python.exe" "bin/python")
                    venv))

(defun ob-chat-ai--run-in-turn (buffer commands on-end)
  "Run COMMANDS, each after the one before, their output in BUFFER.
Call ON-END with t when all have succeeded, or with nil after the
first that fails."
  (if (null commands)
      (funcall on-end t)
    (let ((command (car commands)))
      (ob-chat-ai--install-output
       buffer (format "$ %s\n" (mapconcat #'shell-quote-argument command " ")))
      (make-process
       :name "chat-ai-install"
       :buffer buffer
       :command command
       :connection-type 'pipe
       :noquery t
       :filter (lambda (_process output) (ob-chat-ai--install-output buffer output))
       :sentinel (lambda (process _change)
                   (unless (process-live-p process)
                     (if (eq 0 (process-exit-status process))
                         (ob-chat-ai--run-in-turn buffer (cdr commands) on-end)
                       (ob-chat-ai--install-output
                        buffer (format "[exited with status %d]\n"
                                       (process-exit-status process)))
                       (funcall on-end nil))))))))

(defun ob-chat-ai--install-output (buffer text)
  "Add TEXT to the end of BUFFER; in batch, print it too.
Point, and each window that shows the end of BUFFER, follow the text."
  (when noninteractive
    (princ text #'external-debugging-output))
  (when (buffer-live-p buffer)
    (with-current-buffer buffer
      (let* ((inhibit-read-only t)
             (end (point-max))
             (following (seq-filter (lambda (window) (= (window-point window) end))
                                    (get-buffer-window-list buffer nil t)))
             (moving (= (point) end)))
        (save-excursion
          (goto-char end)
          (insert text))
        (when moving
          (goto-char (point-max)))
        (dolist (window following)
          (set-window-point window (point-max)))))))

(defun ob-chat-ai--report-install (ok buffer)
  "Say in BUFFER and the echo area whether the install went OK, and what next."
  (let ((line
         (if (not ok)
             (format "chat-ai: installing the helper failed; see %s"
                     ob-chat-ai--install-buffer)
           (ob-chat-ai-process-stop-helper)
           (let ((first (car (ob-chat-ai-find-helper)))
                 (installed (ob-chat-ai--installed-helper)))
             (concat
              (format "chat-ai: the helper is installed in %s"
                      (abbreviate-file-name (ob-chat-ai--helper-venv)))
              (if (equal first installed)
                  "; chat-ai blocks use it now"
                (format "; but %s comes first (set `ob-chat-ai-helper-command' \
to nil and take it off `exec-path' to use the new one)"
                        first)))))))
    (ob-chat-ai--install-output buffer (concat line "\n"))
    (unless noninteractive
      (message "%s" line))))

;;;; The doctor

(defconst ob-chat-ai--doctor-buffer "*chat-ai doctor*"
  "The name of the buffer that shows the doctor's report.")

;;;###autoload
(defun ob-chat-ai-doctor ()
  "Show what ob-chat-ai needs, and whether its requests arrive, with fixes.
The report, an Org buffer, lists the Emacs and Org versions, the
helper with its version and Python, each provider as it resolves
\(base URL, where its key comes from, shown masked), the proxy
settings and a live check of `ob-chat-ai-provider'.  Return the
buffer."
  (interactive)
  (unless noninteractive
    (message "chat-ai: asking the helper, and checking %s..." ob-chat-ai-provider))
  (let ((report (ob-chat-ai--doctor-report))
        (buffer (get-buffer-create ob-chat-ai--doctor-buffer)))
    (with-current-buffer buffer
      (let ((inhibit-read-only t))
        (erase-buffer)
        (insert report)
        (org-mode)
        (goto-char (point-min))
        (setq buffer-read-only t)))
    (unless noninteractive
      (pop-to-buffer buffer))
    buffer))

(defun ob-chat-ai--doctor-report ()
  "Return the doctor's report, as Org text."
  (let* ((command (ob-chat-ai-find-helper))
         (facts (and command (executable-find (car command))
                     (ob-chat-ai--helper-doctor command nil nil)))
         (found (if (and (consp facts) (alist-get 'helper facts))
                    (ob-chat-ai--helper-doctor
                     command (ob-chat-ai--auth-source-keys facts) t)
                  facts)))
    (concat
     "#+title: ob-chat-ai doctor\n\n"
     "* Emacs\n"
     (ob-chat-ai--doctor-item "Emacs" emacs-version)
     (ob-chat-ai--doctor-item "Org" (org-version))
     (ob-chat-ai--doctor-item "ob-chat-ai" (abbreviate-file-name
                                            ob-chat-ai--package-directory))
     "\n* Helper\n"
     (ob-chat-ai--doctor-helper command found)
     (if (and (consp found) (alist-get 'helper found))
         (concat
          "\n* Providers\n"
          (mapconcat #'ob-chat-ai--doctor-provider (alist-get 'providers found) "")
          "\n* Proxy\n"
          (if (alist-get 'proxy found)
              (mapconcat (lambda (setting)
                           (ob-chat-ai--doctor-item (symbol-name (car setting))
                                                    (cdr setting)))
                         (alist-get 'proxy found) "")
            "- none\n")
          (ob-chat-ai--doctor-check (alist-get 'check found)))
       ""))))

(defun ob-chat-ai--helper-doctor (command keys check)
  "Return the report of `chat-ai doctor', run like helper COMMAND, or a problem.
KEYS, an alist of provider names and (KEY . SOURCE), are handed to
it.  With CHECK, it checks `ob-chat-ai-provider' live; without, it
only lists the settings.  A problem is a string saying what went
wrong."
  (let ((program (car command))
        (args (append (remove "--serve" (cdr command))
                      (list "doctor" "--json" "--keys-on-stdin"
                            "--provider" ob-chat-ai-provider)
                      (and (not check) (list "--no-check"))))
        (input (json-serialize
                (list (cons 'keys
                            (or (mapcar (lambda (entry)
                                          (list (car entry)
                                                (cons 'key (cadr entry))
                                                (cons 'source (cddr entry))))
                                        keys)
                                (make-hash-table)))))))
    (with-temp-buffer
      (let ((status (apply #'call-process-region input nil program nil
                           (list t nil) nil args)))
        (condition-case nil
            (if (memq status '(0 1))
                (json-parse-string (buffer-string) :object-type 'alist
                                   :array-type 'list :null-object nil
                                   :false-object nil)
              (format "the helper has no doctor (it exited with status %s); \
it is older than this package" status))
          (json-error "The helper's doctor did not answer in JSON"))))))

(defun ob-chat-ai--auth-source-keys (facts)
  "Return the keys auth-source has for the providers in FACTS.
The result is an alist of provider names (symbols) and (KEY . SOURCE)."
  (delq nil
        (mapcar (lambda (provider)
                  (let* ((url (alist-get 'base_url provider))
                         (host (and url (url-host (url-generic-parse-url url))))
                         (key (and host (ob-chat-ai--auth-source-key host))))
                    (when key
                      (cons (intern (alist-get 'name provider))
                            (cons key (format "auth-source (machine %s)" host))))))
                (alist-get 'providers facts))))

(defun ob-chat-ai--doctor-item (name value)
  "Return an Org description item NAME with VALUE."
  (format "- %s :: %s\n" name value))

(defun ob-chat-ai--doctor-problem (problem fix)
  "Return the Org items that state PROBLEM and its FIX."
  (concat (ob-chat-ai--doctor-item "Problem" problem)
          (ob-chat-ai--doctor-item "Fix" fix)))

(defun ob-chat-ai--doctor-helper (command found)
  "Return the Helper section for helper COMMAND, whose doctor said FOUND."
  (let ((helper (and (consp found) (alist-get 'helper found))))
    (cond
     ((null command)
      (ob-chat-ai--doctor-problem
       (format "no chat-ai helper on the variable `exec-path' or in %s"
               (abbreviate-file-name (ob-chat-ai--helper-venv)))
       "M-x ob-chat-ai-install-helper"))
     ((not (executable-find (car command)))
      (ob-chat-ai--doctor-problem (format "cannot run %s" (car command))
                                  "M-x ob-chat-ai-install-helper, or fix \
`ob-chat-ai-helper-command'"))
     ((null helper)
      (concat (ob-chat-ai--doctor-item "Command" (string-join command " "))
              (ob-chat-ai--doctor-problem found "M-x ob-chat-ai-install-helper")))
     (t
      (concat
       (ob-chat-ai--doctor-item "Command" (string-join command " "))
       (ob-chat-ai--doctor-item "Found as" (ob-chat-ai--helper-origin command))
       (ob-chat-ai--doctor-item "Version" (format "%s, protocol %s"
                                                  (alist-get 'version helper)
                                                  (alist-get 'protocol helper)))
       (ob-chat-ai--doctor-item "Python" (format "%s at %s"
                                                 (alist-get 'python helper)
                                                 (alist-get 'executable helper)))
       (if (< (alist-get 'protocol helper) ob-chat-ai--protocol-version)
           (ob-chat-ai--doctor-problem
            (format "this ob-chat-ai needs protocol %d" ob-chat-ai--protocol-version)
            "M-x ob-chat-ai-install-helper")
         ""))))))

(defun ob-chat-ai--helper-origin (command)
  "Return where helper COMMAND was found."
  (cond
   (ob-chat-ai-helper-command "`ob-chat-ai-helper-command'")
   ((equal (car command) (ob-chat-ai--installed-helper))
    "installed by M-x ob-chat-ai-install-helper")
   (t "`exec-path'")))

(defun ob-chat-ai--doctor-provider (provider)
  "Return the Org subsection about PROVIDER, as the helper's doctor reported it."
  (let ((name (alist-get 'name provider)))
    (concat
     (format "** %s%s\n" name
             (if (equal name ob-chat-ai-provider) " (`ob-chat-ai-provider')" ""))
     (if (assq 'base_url provider)
         (concat
          (ob-chat-ai--doctor-item "Base URL" (or (alist-get 'base_url provider)
                                                  "none"))
          (ob-chat-ai--doctor-item "Defined" (alist-get 'defined_in provider))
          (ob-chat-ai--doctor-item "Key"
                                   (concat (or (alist-get 'key_source provider)
                                               "none found")
                                           (let ((key (alist-get 'key provider)))
                                             (if key (concat " " key) "")))))
       "")
     (if (alist-get 'problem provider)
         (ob-chat-ai--doctor-problem (alist-get 'problem provider)
                                     (alist-get 'fix provider))
       ""))))

(defun ob-chat-ai--doctor-check (check)
  "Return the section about the live CHECK of the chosen provider."
  (if (null check)
      ""
    (concat
     (format "\n* Check of %s\n" (alist-get 'provider check))
     (if (alist-get 'url check)
         (ob-chat-ai--doctor-item "Request" (format "POST %s, model %s"
                                                    (alist-get 'url check)
                                                    (alist-get 'model check)))
       "")
     (ob-chat-ai--doctor-item
      "Result" (format "%s%s: %s"
                       (if (alist-get 'ok check) "OK" "FAILED")
                       (if (alist-get 'latency_ms check)
                           (format " in %s ms" (alist-get 'latency_ms check))
                         "")
                       (alist-get 'result check)))
     (if (alist-get 'ok check)
         ""
       (ob-chat-ai--doctor-item "Fix" (alist-get 'fix check))))))

(provide 'ob-chat-ai-setup)

;;; ob-chat-ai-setup.el ends here
